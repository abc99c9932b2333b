"""Every path through a real PgBouncer in transaction pooling mode (README, "PgBouncer").

The pooler (``tests/pgbouncer_server.py``, Debian's pgbouncer) keeps 2 server sessions per
database, so one client's consecutive statements land on different sessions: exactly what
breaks named prepared statements, session state and LISTEN in production. Without the
package these tests are skipped with one line saying how to get it.
"""

from __future__ import annotations

import threading
import time

import pgbouncer_server
import psycopg
import pytest
from click.testing import CliRunner
from worker_helpers import FAST, TESTS, create_runs_table, runs

from pgtaskq import TaskQueue
from pgtaskq.cli import cli
from pgtaskq.sql import migrations
from pgtaskq.testing import WorkerProcess, wait_until

if pgbouncer_server.binary() is None:  # one line in the summary, not one per test
    pytest.skip(pgbouncer_server.HOW_TO_GET, allow_module_level=True)


@pytest.fixture
def bouncer_dsn(pgbouncer, pgtaskq_dsn) -> str:
    return pgbouncer.dsn(pgtaskq_dsn)


@pytest.fixture
def worker_via(bouncer_dsn, tq):
    """Factory of ``pgtaskq worker`` subprocesses whose DSN is the pooler's."""
    started: list[WorkerProcess] = []

    def start(app: str, *args: str, env: dict[str, str] | None = None,
              global_args: list[str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(app, bouncer_dsn, tq.schema, args, env=env,
                               global_args=global_args or (), pythonpath=[TESTS])
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


def test_pooled_enqueue_from_many_processes_with_default_settings(bouncer_dsn, tq, db):
    """Each TaskQueue stands for a web process: the second one's fast path met the first
    one's prepared statement on a pooled session (DuplicatePreparedStatement), or missed
    its own (InvalidSqlStatementName). Nothing configured: pgtaskq notices and stops
    preparing; no enqueue fails and every job is written once."""
    ids = []
    for _process in range(3):
        producer = TaskQueue(bouncer_dsn, schema=tq.schema, pool_max_size=2)
        try:
            ids += [producer.enqueue("noop", args=[n]) for n in range(20)]
        finally:
            producer.close()
    assert len(set(ids)) == 60
    count = db.execute(f'SELECT count(*) FROM "{tq.schema}".jobs').fetchone()[0]
    assert count == 60


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_prepare_off_enqueue_many_conn_and_reads(how, bouncer_dsn, tq, db, monkeypatch):
    if how == "environment":
        monkeypatch.setenv("PGTASKQ_PREPARE", "0")
        producer = TaskQueue(bouncer_dsn, schema=tq.schema)
    else:
        producer = TaskQueue(bouncer_dsn, schema=tq.schema, prepare=False)
    try:
        assert producer.prepare is False
        single = [producer.enqueue("noop", args=[n]) for n in range(12)]
        many = [producer.enqueue_many("noop", [{"args": [n]}, {"args": [n + 1]}])
                for n in range(12)]
        deduped = [producer.enqueue("noop", dedupe_key="same") for _ in range(8)]
        assert len(set(deduped)) == 1
        for job_id in single:  # psycopg would prepare the 6th execution of one statement
            assert producer.get_job(job_id).status == "queued"
        assert len(producer.list_jobs(limit=100)) == 12 + 24 + 1
        with psycopg.connect(bouncer_dsn, prepare_threshold=None) as conn:
            kept = producer.enqueue("noop", args=["kept"], conn=conn)
        with psycopg.connect(bouncer_dsn, prepare_threshold=None) as conn:
            dropped = producer.enqueue("noop", args=["dropped"], conn=conn)
            conn.rollback()
        assert producer.get_job(kept) is not None
        assert producer.get_job(dropped) is None
        assert producer.cancel(single[0]) is True
        assert producer.retry(single[0]) is True
    finally:
        producer.close()
    assert len(many) == 12


def test_worker_poll_only_through_pgbouncer(worker_via, tq, db):
    """The worker's leasing used to fail with 'prepared statement "_pg3_0" already
    exists' once psycopg prepared its statements automatically (after 5 executions)."""
    create_runs_table(db, tq.schema)
    worker = worker_via("apps.basic:tq", "--poll-only", *FAST, "--poll-interval", "0.05",
                        env={"PGTASKQ_PREPARE": "0"})
    worker.wait_ready()
    for n in range(20):  # one lease per job, polled: every statement runs many times
        tq.enqueue("record", args=[n])
        wait_until(lambda n=n: len(runs(db, tq.schema, "ran")) == n + 1, 10,
                   what=f"job {n} ran")
    tq.enqueue_many("record", [{"args": [n]} for n in range(100, 140)])
    wait_until(lambda: len(runs(db, tq.schema, "ran")) == 60, 30, what="60 jobs ran")
    assert worker.stop() == 0
    output = worker.output()
    assert "prepared statement" not in output, output
    assert "failed" not in output, output


def test_worker_and_producer_find_the_pooler_by_themselves(bouncer_dsn, tq, db, caplog):
    """Nothing configured (no PGTASKQ_PREPARE=0, no --no-prepare): psycopg prepared the
    worker's statements after 5 executions as ``_pg3_N``, which collided on the pooled
    server sessions. Both sides now notice the pooler on connecting and never prepare."""
    create_runs_table(db, tq.schema)
    worker = WorkerProcess("apps.basic:tq", bouncer_dsn, tq.schema,
                           ["--poll-only", *FAST, "--poll-interval", "0.05"],
                           pythonpath=[TESTS])
    producer = TaskQueue(bouncer_dsn, schema=tq.schema, pool_max_size=2)
    try:
        worker.wait_ready()
        with caplog.at_level("INFO", logger="pgtaskq"):
            for n in range(20):  # one lease per job: every statement runs many times
                producer.enqueue("record", args=[n])
                wait_until(lambda n=n: len(runs(db, tq.schema, "ran")) == n + 1, 10,
                           what=f"job {n} ran")
        assert producer.prepare is False
        assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
        assert worker.stop() == 0
        output = worker.output()
        assert "prepared statement" not in output, output
        assert "failed" not in output, output
    finally:
        producer.close()
        worker.close()
    direct = TaskQueue(tq.conninfo, schema=tq.schema, pool_max_size=1)
    try:
        direct.enqueue("noop")
        assert direct.prepare is True  # a direct connection keeps its prepared statements
    finally:
        direct.close()


def test_worker_no_prepare_flag_and_listen_dsn(worker_via, tq, db, pgtaskq_dsn):
    """``pgtaskq --no-prepare worker APP --listen-dsn DIRECT``: statements through the
    pooler, LISTEN on a direct connection, so jobs are picked up without waiting for a poll
    (the poll interval here is 30 s)."""
    create_runs_table(db, tq.schema)
    worker = worker_via("apps.basic:tq", "--listen-dsn", pgtaskq_dsn, "--poll-interval", "30",
                        global_args=["--no-prepare"])
    worker.wait_ready()
    assert "listening" in worker.output()
    for n in range(12):
        tq.enqueue("record", args=[n])
        wait_until(lambda n=n: len(runs(db, tq.schema, "ran")) == n + 1, 5,
                   what=f"job {n} picked up at once")
    assert worker.stop() == 0
    assert "prepared statement" not in worker.output(), worker.output()


def test_cron_through_pgbouncer(worker_via, tq, db):
    worker = worker_via("apps.cron_app:tq", "--poll-only", "-q", "default", *FAST,
                        env={"PGTASKQ_PREPARE": "0"})
    worker.wait_ready()
    wait_until(lambda: db.execute(
        f'SELECT count(*) FROM "{tq.schema}".jobs WHERE schedule = %s',
        ("every_second",)).fetchone()[0] >= 3, 15, what="three cron ticks enqueued")
    assert worker.stop() == 0
    assert "failed" not in worker.output(), worker.output()


def test_stats_check_jobs_through_pgbouncer(bouncer_dsn, tq):
    tq.enqueue_many("noop", [{"args": [n]} for n in range(5)])
    runner = CliRunner()
    for args in (["stats"], ["jobs", "--limit", "3"], ["schedules"], ["stats"], ["check"]):
        for _ in range(7):  # past psycopg's automatic prepare threshold
            result = runner.invoke(cli, ["--dsn", bouncer_dsn, "--schema", tq.schema,
                                         "--no-prepare", *args])
            assert result.exit_code in (0, 1) if args == ["check"] else result.exit_code == 0, \
                result.output
            assert "prepared statement" not in result.output, result.output


def test_the_pooler_answers_after_more_log_than_a_pipe_holds(pgtaskq_dsn):
    """PgBouncer logs each login and disconnection to stderr too, which was a pipe nobody
    read: after about 250 client connections (64 KiB) it stopped in ``write(2)`` for good,
    and with it every client, one of them holding the install lock in the middle of
    test_concurrent_install_and_upgrade_leave_no_lock. (A PgBouncer of its own, so that
    a harness that freezes it again fails here, not in the tests after this one.)"""
    bouncer = pgbouncer_server.PgBouncer(pgtaskq_dsn)
    log = bouncer.directory / "pgbouncer.log"
    try:
        clients = 0
        while log.stat().st_size < 2 * 65536:  # twice what a Linux pipe holds
            with psycopg.connect(bouncer.dsn(), connect_timeout=5) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            clients += 1
        assert clients > 250
    finally:
        bouncer.stop()


def test_concurrent_install_and_upgrade_leave_no_lock(pgbouncer, bouncer_dsn, schema_name, db,
                                                     pgtaskq_dsn):
    """Every replica of an app may run ``install`` at boot through the pooler: the install
    lock is transaction-scoped, so it never stays on a pooled session for another client.

    When this hung (a frozen pooler: test_the_pooler_answers_after_more_log_than_a_pipe_holds),
    pytest-timeout's exception went on to wait for the install lock in the uninstall below,
    for ever; now both waits have a deadline and the failure shows the sessions."""
    errors: list[BaseException] = []

    def install() -> None:
        try:
            queue = TaskQueue(bouncer_dsn, schema=schema_name, prepare=False)
            queue.install()
            queue.upgrade()
            queue.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=install, daemon=True) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            pytest.fail("install through the pooler did not finish within 60s\n"
                        + _sessions(db, pgbouncer))
        assert not errors, errors
        held = db.execute(  # the install lock of this schema (other tests' locks differ)
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 "
            "AND classid::bigint = hashtext('pgtaskq.install')::bigint & 4294967295 "
            "AND objid::bigint = hashtext(%s)::bigint & 4294967295", (schema_name,))
        assert held.fetchone()[0] == 0
        versions = db.execute(
            f'SELECT count(*), max(version) FROM "{schema_name}".schema_version').fetchone()
        assert versions == (migrations.LATEST_VERSION, migrations.LATEST_VERSION)
        result = CliRunner().invoke(cli, ["--dsn", bouncer_dsn, "--schema", schema_name,
                                          "--no-prepare", "upgrade"])
        assert result.exit_code == 0, result.output
    finally:
        TaskQueue(pgtaskq_dsn, schema=schema_name,
                  connect_kwargs={"options": "-c lock_timeout=10s"}).uninstall()


def _sessions(db: psycopg.Connection, bouncer: pgbouncer_server.PgBouncer) -> str:
    """What PostgreSQL's sessions and the pooler's clients and servers were doing."""
    rows = db.execute(
        "SELECT pid, application_name, state, wait_event_type, wait_event, "
        "left(query, 80) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
    lines = ["pg_stat_activity:", *map(str, rows)]
    try:
        for what in ("CLIENTS", "SERVERS"):
            lines += [f"SHOW {what}:", *(str({key: row[key] for key in (
                "state", "port", "link", "ptr", "remote_pid", "wait")})
                for row in bouncer.show(what))]
    except psycopg.Error as exc:
        lines.append(f"the pooler's admin console does not answer either: {exc}")
    return "\n".join(lines)
