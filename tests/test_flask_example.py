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
from webapps import EXAMPLES, Service, signup_storm, start_gunicorn

from pgtaskq.testing import wait_until

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
        storm = signup_storm(base_url, requests=200, threads=16)
        assert storm.other == []
        assert len(storm.committed) == 100 and len(storm.rolled_back) == 100

        def all_sent() -> bool:
            worker.fail_if_dead()
            row = db.execute(f"SELECT count(*) FROM {app_schema}.welcome_emails").fetchone()
            return row[0] == 100

        wait_until(all_sent, 60, interval=0.1, what="100 welcome emails")
        wait_until(lambda: len(tq.list_jobs(status="succeeded", limit=500)) == 100, 15,
                   what="100 succeeded jobs")

        jobs = tq.list_jobs(limit=500)
        assert sorted(job.id for job in jobs) == sorted(storm.committed.values())
        assert {(job.status, job.attempts) for job in jobs} == {("succeeded", 1)}
        assert all(tq.get_job(job_id) is None for job_id in storm.rolled_back.values())

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
