"""The parker: keeps jobs no claim can take now out of the ready indexes.

A claim walks ``jobs_ready`` in claim order and steps over every job it cannot take. Jobs
that are not due yet, or whose task no live worker registers, at a higher priority than
the runnable ones, made every claim walk them all (200,000 jobs of an unknown task cut a
worker's drain to 0.26x). This thread parks them (``sql.registry.SWEEP``): it looks at the
head of the ready index, the part the claims walk, and parks what blocks it, round after
round until a round finds nothing. It runs every ``interval`` seconds and when the worker
sees a slow claim (``nudge``); a round that finds nothing reads ``WINDOW`` index entries.

Parked jobs come back through the workers that run their task (``Worker._unpark_due``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pgtaskq import defaults
from pgtaskq.sql import registry as registry_sql
from pgtaskq.worker.background import PeriodicThread
from pgtaskq.worker.database import Statements

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

log = logging.getLogger("pgtaskq.worker")

WINDOW = 1000
"""Head entries of ``jobs_ready`` one sweep round looks at."""
MAX_ROUNDS = 1000
"""Rounds per run (a million jobs parked), so one run never holds the thread for long."""
VACUUM_AFTER = 1000
"""Jobs parked by one run after which the jobs table is vacuumed (``vacuum``)."""
MIN_NUDGE_INTERVAL = 1.0
"""Least seconds between two runs asked for by slow claims."""


class Parker(PeriodicThread):
    name = "parker"

    def __init__(self, pool: ConnectionPool, schema: str, *, interval: float,
                 vacuum: Callable[[], None] | None = None) -> None:
        super().__init__(interval)
        self._vacuum = vacuum
        self._db = Statements(pool, schema)
        self._last_run = 0.0
        self._reported: set[str] = set()
        self.parked = 0
        """Jobs this thread parked (tests and benchmarks read it)."""

    def nudge(self) -> None:
        """A claim was slow: sweep soon (at most once per ``MIN_NUDGE_INTERVAL``)."""
        if time.monotonic() - self._last_run >= MIN_NUDGE_INTERVAL:
            self.wake()

    def run_once(self) -> None:
        self._last_run = time.monotonic()
        params = {"window": WINDOW, "lost_beats": defaults.WORKER_LOST_AFTER_BEATS,
                  "lost_min": defaults.WORKER_LOST_AFTER_MIN}
        unknown: dict[str, int] = {}
        parked = 0
        for _ in range(MAX_ROUNDS):
            if self.stopping:
                break
            rows = self._db.fetchall(registry_sql.SWEEP, params)
            if not rows:
                break
            for row in rows:
                parked += row.parked
                self.parked += row.parked
                if not row.deferred:
                    unknown[row.task] = unknown.get(row.task, 0) + row.parked
        if parked >= VACUUM_AFTER and self._vacuum is not None:
            # the parked rows' old entries stay at the head of jobs_ready until VACUUM
            # removes them: every claim would still step over them
            self._vacuum()
        for task, count in unknown.items():
            if task not in self._reported:
                self._reported.add(task)
                log.warning("parked %d jobs of task %r: no live worker registers it; they "
                            "wait, queued, until a worker that knows the task starts",
                            count, task[:200])
