"""Retention: delete finished jobs and rollups past their time, in small batches.

Retention is per status (``KEEP_SUCCEEDED`` for succeeded jobs, ``KEEP_FAILED`` for failed
and cancelled ones, which people look at for longer) and for the per-minute rollups
(``KEEP_STATS``); rollup rows older than two minutes are also folded from one per worker
into one per (minute, queue, task), which keeps their table small however many workers
run. The statements delete small batches with ``SKIP LOCKED`` (``pgtaskq.sql.history``),
so no long transaction or table lock ever happens, however large the backlog after
retention was shortened. Every live worker runs them on an interval (its pruner thread,
``pgtaskq.worker.pruner``); ``pgtaskq purge`` runs :func:`purge` by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from pgtaskq import defaults
from pgtaskq.sql import history as history_sql
from pgtaskq.sql import render

if TYPE_CHECKING:
    import psycopg

FINAL_STATUSES = ("succeeded", "failed", "cancelled")

FOLD_STATS_AFTER = 120.0
"""Per-worker rollup rows are merged into one per (minute, queue, task) once their minute
started longer ago than this: ``stats`` needs per-worker rows only for the current and the
previous minute ("done 1m"), and every row less makes its 5-minute percentiles cheaper. A
late write into an already folded minute (a statement stalled for minutes) just creates a
per-worker row again, folded on the next pass: sums stay right."""

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


def prune_trace_contexts(execute: Execute, schema: str, *, limit: int = defaults.PRUNE_BATCH,
                         keep_going: Callable[[], bool] = lambda: True) -> int:
    """Delete the trace contexts of jobs that are gone; return how many."""
    return _drain(execute, render(schema, history_sql.PRUNE_TRACE_CONTEXT),
                  {"limit": limit}, limit, keep_going)


def _drain(execute: Execute, query: str, params: dict[str, object], limit: int,
           keep_going: Callable[[], bool]) -> int:
    total = 0
    while keep_going():
        count = execute(query, params)
        total += count
        if count < limit:
            break
    return total
