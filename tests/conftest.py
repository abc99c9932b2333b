"""Suite-wide settings; the fixtures come from the ``pgtaskq.testing`` plugin."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

import psycopg
import pytest
from pgbouncer_server import PgBouncer, running
from psycopg import conninfo, sql
from worker_helpers import TESTS, create_runs_table

from pgtaskq import TaskQueue
from pgtaskq.testing import installed_queue


@pytest.fixture
def worker_pythonpath() -> Sequence[str]:
    """The suite's worker apps (``apps.basic:tq``...) live in tests/apps."""
    return [TESTS]


@pytest.fixture(scope="session")
def pgbouncer(pgtaskq_dsn: str) -> Iterator[PgBouncer]:
    """A real PgBouncer in transaction mode in front of the test server (skips without it)."""
    yield from running(pgtaskq_dsn)


@pytest.fixture
def runs_table(db: psycopg.Connection, tq: TaskQueue) -> None:
    """The test apps' ``test_runs`` table, where their tasks record each run."""
    create_runs_table(db, tq.schema)


@pytest.fixture
def private_dsn(pgtaskq_dsn: str) -> Iterator[str]:
    """A database of its own on the test server, dropped afterwards, for tests that need
    VACUUM to remove what they made dead: it keeps every row that a snapshot of another
    session of the same database might still see, and on a shared server (other suites,
    an idle psql, a hung client) such a snapshot can stay for minutes. Snapshots of
    sessions in other databases do not hold back a table's VACUUM."""
    name = f"pgtaskq_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pgtaskq_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield conninfo.make_conninfo(pgtaskq_dsn, dbname=name)
    finally:
        with psycopg.connect(pgtaskq_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


@pytest.fixture
def private_tq(private_dsn: str, schema_name: str) -> Iterator[TaskQueue]:
    """``tq`` in a database of its own (``private_dsn``)."""
    with installed_queue(private_dsn, schema_name) as queue:
        yield queue


@pytest.fixture
def private_db(private_dsn: str) -> Iterator[psycopg.Connection]:
    """``db`` on the database of ``private_dsn``."""
    with psycopg.connect(private_dsn, autocommit=True) as conn:
        yield conn
