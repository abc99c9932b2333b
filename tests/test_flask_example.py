"""examples/flask_app under real gunicorn with a real ``flask pgtaskq worker``.

200 concurrent signups, every second one failing after its enqueue: jobs must exist for
exactly the committed signups, and each must run exactly once (the welcome table's primary
key would make a second run fail, and attempts would show it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from webapps import EXAMPLES, Service, start_gunicorn, storm_and_check_jobs

APP_DIR = EXAMPLES / "flask_app"


@pytest.fixture
def app_schema(db):
    """A schema of its own for the example's tables, dropped afterwards."""
    name = f"app_{uuid.uuid4().hex[:12]}"
    db.execute(f"CREATE SCHEMA {name}")
    yield name
    db.execute(f"DROP SCHEMA {name} CASCADE")


def test_signups_under_gunicorn_commit_exactly_their_jobs(pgtaskq_dsn, tq, db, app_schema):
    env = {
        "PGTASKQ_DSN": pgtaskq_dsn,
        "PGTASKQ_SCHEMA": tq.schema,
        "APP_DB_SCHEMA": app_schema,
        "FLASK_APP": "app:create_app",
    }
    init = subprocess.run(
        [sys.executable, "-m", "flask", "init-db"], cwd=APP_DIR, capture_output=True,
        text=True, timeout=60, env={**os.environ, **env},
    )
    assert init.returncode == 0, init.stderr
    server, base_url = start_gunicorn("app:create_app()", APP_DIR, env)
    worker = Service(
        [sys.executable, "-m", "flask", "pgtaskq", "worker", "--concurrency", "4",
         "--poll-interval", "0.5"],
        env, APP_DIR,
    )
    try:
        worker.wait_for_output("ready")
        storm = storm_and_check_jobs(
            base_url, worker, tq, db, f"SELECT count(*) FROM {app_schema}.welcome_emails")

        users = dict(db.execute(f"SELECT email, id FROM {app_schema}.users").fetchall())
        assert set(users) == set(storm.committed)
        sent = dict(db.execute(
            f"SELECT u.email, w.job_id FROM {app_schema}.welcome_emails w "
            f"JOIN {app_schema}.users u ON u.id = w.user_id"
        ).fetchall())
        assert sent == storm.committed  # each user's email came from its own job
    finally:
        worker_code = worker.stop()
        server.stop()
    assert worker_code == 0, worker.output()
