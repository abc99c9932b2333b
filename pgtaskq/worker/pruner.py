"""The pruner: each worker's thread that applies retention (``pgtaskq.operations.
retention``) every ``PRUNE_INTERVAL``, pausing before each batch so that a backlog of
millions of expired rows is worked off steadily, beside the acknowledgements.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pgtaskq import defaults
from pgtaskq.operations.retention import (
    FOLD_STATS_AFTER,
    fold_stats,
    prune_stats,
    prune_trace_contexts,
    purge,
)
from pgtaskq.worker.background import PeriodicThread
from pgtaskq.worker.database import POOL_TIMEOUT

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

log = logging.getLogger("pgtaskq.worker")

BATCH_PAUSE = 0.02
"""Seconds the workers' pruner waits before each batch (``purge`` does not wait)."""


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
        deleted["trace contexts"] = prune_trace_contexts(
            self._execute, self._schema, limit=self._batch, keep_going=self._keep_going)
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
