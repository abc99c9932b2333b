"""examples/django_project under real gunicorn with a real ``manage.py pgtaskq worker``.

200 concurrent signups, every second one failing inside ``atomic()`` after its
django.tasks enqueue: jobs must exist for exactly the committed signups, each must run
once, and the view that reads ``get_result()`` must show the outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from webapps import EXAMPLES, Service, get_json, start_gunicorn, storm_and_check_jobs

PROJECT = EXAMPLES / "django_project"


@pytest.fixture
def app_schema(db):
    """A schema of its own for Django's tables, dropped afterwards."""
    name = f"dj_{uuid.uuid4().hex[:12]}"
    db.execute(f"CREATE SCHEMA {name}")
    yield name
    db.execute(f"DROP SCHEMA {name} CASCADE")


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT, capture_output=True, text=True,
        timeout=120, env={**os.environ, **env},
    )


def test_signups_under_gunicorn_commit_exactly_their_jobs(pgtaskq_dsn, tq, db, app_schema):
    env = {
        "PGTASKQ_DSN": pgtaskq_dsn,
        "PGTASKQ_SCHEMA": tq.schema,
        "APP_DB_SCHEMA": app_schema,
        "DJANGO_SETTINGS_MODULE": "project.settings",
    }
    migrated = manage(env, "migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stderr
    server, base_url = start_gunicorn("project.wsgi", PROJECT, env)
    worker = Service(
        [sys.executable, "manage.py", "pgtaskq", "worker", "--concurrency", "4",
         "--poll-interval", "0.5"],
        env, PROJECT,
    )
    try:
        worker.wait_for_output("ready")
        storm = storm_and_check_jobs(
            base_url, worker, tq, db,
            f"SELECT count(*) FROM {app_schema}.accounts_welcomeemail")
        jobs = tq.list_jobs(limit=500)
        assert {job.task for job in jobs} == {"accounts.tasks.send_welcome"}

        signups = {row[0] for row in db.execute(
            f"SELECT email FROM {app_schema}.accounts_signup").fetchall()}
        assert signups == set(storm.committed)
        sent = dict(db.execute(
            f"SELECT s.email, w.job_id FROM {app_schema}.accounts_welcomeemail w "
            f"JOIN {app_schema}.accounts_signup s ON s.id = w.signup_id"
        ).fetchall())
        assert sent == storm.committed

        some_job = next(iter(storm.committed.values()))
        status = get_json(f"{base_url}/welcome/{some_job}")
        assert status["status"] == "SUCCESSFUL" and status["attempts"] == 1
        assert status["return_value"].endswith("on attempt 1")
    finally:
        worker_code = worker.stop()
        server.stop()
    assert worker_code == 0, worker.output()

    listed = manage(env, "pgtaskq", "jobs", "--status", "succeeded", "--limit", "500", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 100
    missing = manage(env, "pgtaskq", "show", "999999999")
    assert missing.returncode != 0
    assert "no job with id 999999999" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_manage_py_test_passes_and_drops_its_test_database(pgtaskq_dsn, tq, db):
    """The example's own tests use pgtaskq's pool and run jobs inline; afterwards Django
    must be able to drop its test database (it could not while pgtaskq's pool was still
    connected to it: exit status 1 after every test passed)."""
    test_database = f"test_dj_{uuid.uuid4().hex[:12]}"
    env = {
        "PGTASKQ_DSN": pgtaskq_dsn,
        "PGTASKQ_SCHEMA": tq.schema,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DJANGO_TEST_DATABASE": test_database,
    }
    try:
        run = manage(env, "test", "accounts", "--noinput", "-v", "2")
        output = run.stdout + run.stderr
        assert run.returncode == 0, output
        assert "Ran 4 tests" in output and "OK" in output
        assert "being accessed by other users" not in output
        assert db.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                          (test_database,)).fetchone()[0] == 0
    finally:
        db.execute(f'DROP DATABASE IF EXISTS "{test_database}" WITH (FORCE)')
