"""The pruner: workers delete finished jobs and rollups once they are past retention.

Retention is per status (``KEEP_SUCCEEDED`` for succeeded jobs, ``KEEP_FAILED`` for failed
and cancelled ones, which people look at for longer) and for the per-minute rollups
(``KEEP_STATS``); rollup rows older than two minutes are also folded from one per worker
into one per (minute, queue, task), which keeps their table small however many workers
run. Every live worker runs it; the statements delete small batches with
``SKIP LOCKED`` (``pgtaskq.sql.history``), so no long transaction or table lock ever
happens, however large the backlog after retention was shortened. ``pgtaskq purge`` uses
:func:`purge` for manual runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pgtaskq import defaults
from pgtaskq.sql import history as history_sql
from pgtaskq.sql import render
from pgtaskq.worker.background import PeriodicThread
from pgtaskq.worker.database import POOL_TIMEOUT

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

log = logging.getLogger("pgtaskq.worker")

FINAL_STATUSES = ("succeeded", "failed", "cancelled")

FOLD_STATS_AFTER = 120.0
"""Per-worker rollup rows are merged into one per (minute, queue, task) once their minute
started longer ago than this: ``stats`` needs per-worker rows only for the current and the
previous minute ("done 1m"), and every row less makes its 5-minute percentiles cheaper. A
late write into an already folded minute (a statement stalled for minutes) just creates a
per-worker row again, folded on the next pass: sums stay right."""


BATCH_PAUSE = 0.02
"""Seconds the workers' pruner waits before each batch (``purge`` does not wait)."""

Execute = Callable[[str, dict[str, object]], int]
"""Runs one pruning statement (autocommit) and returns the count it reports."""


def on_connection(conn: psycopg.Connection) -> Execute:
    """Run every statement on ``conn`` (must be autocommit: each batch commits alone)."""

    def execute(query: str, params: dict[str, object]) -> int:
        row = conn.execute(query, params).fetchone()
        return int(row[0]) if row else 0

    return execute


def purge(
    execute: Execute,
    schema: str,
    older_than: float,
    statuses: Iterable[str] = FINAL_STATUSES,
    *,
    limit: int = defaults.PRUNE_BATCH,
    keep_going: Callable[[], bool] = lambda: True,
) -> dict[str, int]:
    """Delete finished jobs of ``statuses`` older than ``older_than`` seconds, one batch
    per statement; return the number deleted per status."""
    query = render(schema, history_sql.PRUNE_HISTORY)
    return {status: _drain(execute, query, {"status": status, "older_than": older_than,
                                            "limit": limit}, limit, keep_going)
            for status in statuses}


def prune_stats(execute: Execute, schema: str, older_than: float, *,
                limit: int = defaults.PRUNE_BATCH,
                keep_going: Callable[[], bool] = lambda: True) -> int:
    """Delete rollup rows older than ``older_than`` seconds; return how many."""
    return _drain(execute, render(schema, history_sql.PRUNE_STATS),
                  {"older_than": older_than, "limit": limit}, limit, keep_going)


def fold_stats(execute: Execute, schema: str, older_than: float, *,
               limit: int = defaults.PRUNE_BATCH,
               keep_going: Callable[[], bool] = lambda: True) -> int:
    """Merge per-worker rollup rows older than ``older_than`` seconds into one row per
    (minute, queue, task); return how many rows were folded."""
    return _drain(execute, render(schema, history_sql.FOLD_STATS),
                  {"older_than": older_than, "limit": limit}, limit, keep_going)


def _drain(execute: Execute, query: str, params: dict[str, object], limit: int,
           keep_going: Callable[[], bool]) -> int:
    total = 0
    while keep_going():
        count = execute(query, params)
        total += count
        if count < limit:
            break
    return total


class Pruner(PeriodicThread):
    """Deletes expired history and rollups every ``interval`` seconds."""

    name = "pruner"

    def __init__(
        self,
        pool: ConnectionPool,
        schema: str,
        *,
        keep_succeeded: float = defaults.KEEP_SUCCEEDED,
        keep_failed: float = defaults.KEEP_FAILED,
        keep_stats: float = defaults.KEEP_STATS,
        interval: float = defaults.PRUNE_INTERVAL,
        batch: int = defaults.PRUNE_BATCH,
    ) -> None:
        super().__init__(interval)
        self._pool = pool
        self._schema = schema
        self._keep = {"succeeded": keep_succeeded, "failed": keep_failed,
                      "cancelled": keep_failed}
        self._keep_stats = keep_stats
        self._batch = batch

    def run_once(self) -> dict[str, int]:
        """One pass; returns rows deleted per status (and ``stats`` for rollup rows)."""
        deleted: dict[str, int] = {}
        for status, keep in self._keep.items():
            deleted.update(purge(self._execute, self._schema, keep, (status,),
                                 limit=self._batch, keep_going=self._keep_going))
        deleted["stats"] = prune_stats(self._execute, self._schema, self._keep_stats,
                                       limit=self._batch, keep_going=self._keep_going)
        deleted["trace contexts"] = _drain(
            self._execute, render(self._schema, history_sql.PRUNE_TRACE_CONTEXT),
            {"limit": self._batch}, self._batch, self._keep_going)
        if any(deleted.values()):
            log.info("pruned expired history: %s",
                     ", ".join(f"{n} {what}" for what, n in deleted.items() if n))
        deleted["folded"] = fold_stats(self._execute, self._schema, FOLD_STATS_AFTER,
                                       limit=self._batch, keep_going=self._keep_going)
        return deleted

    def _execute(self, query: str, params: dict[str, object]) -> int:
        # A pool connection per batch, not per pass: a long pass after a retention
        # change must not keep one of the worker's few connections from the completer.
        with self._pool.connection(timeout=POOL_TIMEOUT) as conn:
            row = conn.execute(query, params).fetchone()
        return int(row[0]) if row else 0

    def _keep_going(self) -> bool:
        # A short pause before each batch: a backlog of millions of expired rows is worked
        # off steadily instead of in one burst that competes with the acknowledgements.
        return not self._stop_event.wait(BATCH_PAUSE)
