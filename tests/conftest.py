"""Suite-wide settings; the fixtures come from the ``pgtaskq.testing`` plugin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pgbouncer_server import PgBouncer, running


@pytest.fixture(scope="session")
def pgbouncer(pgtaskq_dsn: str) -> Iterator[PgBouncer]:
    """A real PgBouncer in transaction mode in front of the test server (skips without it)."""
    yield from running(pgtaskq_dsn)
