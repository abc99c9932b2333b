"""Suite-wide settings; the fixtures come from the ``pgtaskq.testing`` plugin."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import psycopg
import pytest
from pgbouncer_server import PgBouncer, running
from worker_helpers import TESTS, create_runs_table

from pgtaskq import TaskQueue


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
