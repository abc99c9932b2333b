"""The worker's way to run one statement: a pooled connection, the schema, rows by name.

Every part of the worker that talks to PostgreSQL (claim, completer, heartbeat, rescuer,
parker, pruner, cron, cancels, due times, registration) runs its statements through one
``Statements`` bound to the worker's pool and schema, instead of each repeating the
borrow-render-execute lines. Rows come back as named tuples: callers read columns by
name, and a statement that gains a column breaks no caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psycopg.rows import namedtuple_row
from psycopg.types.string import TextLoader

from pgtaskq.sql import render

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from psycopg.adapt import AdaptersMap
    from psycopg_pool import ConnectionPool

POOL_TIMEOUT = 5.0
"""Longest a statement waits for one of the worker's connections, seconds."""


class Statements:
    """Runs pgtaskq's statement templates (``pgtaskq.sql``) for one schema on a pool."""

    def __init__(self, pool: ConnectionPool, schema: str) -> None:
        self.pool = pool
        self.schema = schema

    def fetchall(self, template: str, params: Mapping[str, Any] | None = None, *,
                 timeout: float = POOL_TIMEOUT,
                 adapt: Callable[[AdaptersMap], None] | None = None) -> list[Any]:
        """The statement's rows; ``adapt(cursor.adapters)`` may change how it loads them."""
        with self.pool.connection(timeout=timeout) as conn:
            cursor = conn.cursor(row_factory=namedtuple_row)
            if adapt is not None:
                adapt(cursor.adapters)
            return cursor.execute(render(self.schema, template), params).fetchall()

    def fetchone(self, template: str, params: Mapping[str, Any] | None = None, *,
                 timeout: float = POOL_TIMEOUT) -> Any:
        """The statement's first row, or None."""
        with self.pool.connection(timeout=timeout) as conn:
            cursor = conn.cursor(row_factory=namedtuple_row)
            return cursor.execute(render(self.schema, template), params).fetchone()

    def execute(self, template: str, params: Mapping[str, Any] | None = None, *,
                timeout: float = POOL_TIMEOUT) -> None:
        """Run the statement for its effect."""
        with self.pool.connection(timeout=timeout) as conn:
            conn.execute(render(self.schema, template), params)


def load_jsonb_as_text(adapters: AdaptersMap) -> None:
    """``adapt=`` for ``fetchall``: jsonb columns as their JSON text, decoded by the caller."""
    adapters.register_loader("jsonb", TextLoader)
