"""``VACUUM`` of the jobs table by the worker, every so many claims and after parking.

Every claimed row leaves a dead entry at the head of the ready index, and each claim steps
over all of them until VACUUM removes them; autovacuum looks at a table about once a
minute (never, where it is off). It runs in a thread of its own (it may take a second on a
big table): the main loop never waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("pgtaskq.worker")

VACUUM_AFTER_CLAIMS = 50_000
"""Jobs this worker leases between two ``VACUUM (SKIP_LOCKED)`` runs on the jobs table.

Draining 1,000,000 jobs on PostgreSQL's defaults, the rate fell from ~12,000 jobs/s to
8,287 half-way and 7,654 at the end (1,258 with autovacuum off); with this VACUUM every
50,000 claims it was 13,956 / 12,486 / 13,615 at the start, middle and end (every 100,000:
14,653 / 12,117 / 8,189), and the whole drain took half the time. SKIP_LOCKED: a worker
never waits for another's, nor for autovacuum."""
VACUUM_MIN_INTERVAL = 5.0
"""Least seconds between two such VACUUMs by one worker."""


class JobsVacuum:
    """Counts claimed jobs and starts a VACUUM of ``schema.jobs`` when they are many."""

    def __init__(self, conninfo: str, schema: str, connect_kwargs: dict[str, Any]) -> None:
        self._conninfo = conninfo
        self._schema = schema
        self._connect_kwargs = connect_kwargs
        self._claimed = 0
        self._last = 0.0
        self._running = threading.Event()  # set while a VACUUM thread runs

    def claimed(self, count: int) -> None:
        self._claimed += count
        if self._claimed >= VACUUM_AFTER_CLAIMS:
            self.start()

    def after_parking(self) -> None:
        self.start(after_parking=True)

    def start(self, after_parking: bool = False) -> None:
        """Start ``VACUUM (SKIP_LOCKED)`` of the jobs table in a thread of its own."""
        now = time.monotonic()
        if self._running.is_set() or (
                not after_parking and now - self._last < VACUUM_MIN_INTERVAL):
            return
        self._claimed = 0
        self._last = now
        self._running.set()
        # After parking, the parked rows' old entries must go, or every claim steps over
        # them: wait for a running autovacuum (it is cancelled for us) rather than skip.
        statement = sql.SQL("VACUUM {}{}.jobs").format(
            sql.SQL("" if after_parking else "(SKIP_LOCKED) "), sql.Identifier(self._schema))
        threading.Thread(target=self._run, args=(statement,), name="pgtaskq-vacuum",
                         daemon=True).start()

    def _run(self, statement: sql.Composable) -> None:
        try:
            kwargs = {"connect_timeout": 5, **self._connect_kwargs}
            with psycopg.connect(self._conninfo, autocommit=True, **kwargs) as conn:
                conn.execute(statement)
        except Exception as exc:  # maintenance only: the next one may work
            log.debug("VACUUM of the jobs table failed: %s", exc)
        finally:
            self._running.clear()
