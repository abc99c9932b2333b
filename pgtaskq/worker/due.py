"""When the main loop must look again although nothing woke it: the next deferred job of
this worker's tasks comes due, or a parked one does.

Both times come from the database as "seconds from now" on its own clock and are added to
this process's monotonic clock, so the hosts' wall clocks may disagree freely. The
completer reports each retry it requeued (``requeued``), so a retry due in a second wakes
the loop then, not at the next poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pgtaskq.errors import first_line
from pgtaskq.sql import registry as registry_sql
from pgtaskq.sql import worker as worker_sql
from pgtaskq.worker.database import Statements

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

log = logging.getLogger("pgtaskq.worker")

DEFERRED_LOOKUP_MIN_INTERVAL = 0.25
"""Least time between two look-ups of the next deferred job's run_at."""
UNPARK_BATCH = 10_000
"""Parked jobs taken back per statement."""


class DueTimes:
    """The next deferred and the next parked job's due times (``time.monotonic()``)."""

    def __init__(self, pool: ConnectionPool, schema: str, channel: str, tasks: list[str], *,
                 poll_interval: float, wake: Callable[[], None]) -> None:
        self._db = Statements(pool, schema)
        self._channel = channel
        self._tasks = tasks
        self._poll_interval = poll_interval
        self._wake = wake
        self._lock = threading.Lock()  # the completer's thread writes next_deferred too
        self.next_deferred: float | None = None
        self.next_unpark: float | None = None
        self._last_lookup = 0.0

    def deferred_due(self, now: float) -> bool:
        """A deferred job came due (the claim should run)."""
        due = self.next_deferred
        return due is not None and now >= due

    def requeued(self, seconds_until: float) -> None:
        """The completer requeued a job (a retry) due in ``seconds_until``."""
        due = time.monotonic() + max(0.0, seconds_until)
        with self._lock:
            if self.next_deferred is None or due < self.next_deferred:
                self.next_deferred = due
        if seconds_until <= self._poll_interval:
            self._wake()

    def lookup(self, force: bool = False) -> None:
        """Ask the database when the next deferred and parked jobs come due (at most every
        ``DEFERRED_LOOKUP_MIN_INTERVAL`` unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._last_lookup < DEFERRED_LOOKUP_MIN_INTERVAL:
            return
        self._last_lookup = now
        try:
            row = self._db.fetchone(worker_sql.NEXT_DUE, {"tasks": self._tasks})
        except Exception as exc:
            log.debug("next deferred job look-up failed: %s", exc)
            return
        deferred, unpark = (row.deferred, row.unpark) if row else (None, None)
        now = time.monotonic()
        due = [now + max(0.0, s) for s in (deferred, unpark) if s is not None]
        with self._lock:
            self.next_unpark = now + max(0.0, unpark) if unpark is not None else None
            self.next_deferred = min(due) if due else None

    def unpark_if_due(self) -> None:
        if self.next_unpark is not None and time.monotonic() >= self.next_unpark:
            self.unpark()

    def unpark(self) -> None:
        """Put the due parked jobs of this worker's tasks back in the ready indexes (at
        start: the jobs of a task no worker ran until now; later: parked future jobs)."""
        self.next_unpark = None
        try:
            while True:
                row = self._db.fetchone(registry_sql.UNPARK, {
                    "tasks": self._tasks, "limit": UNPARK_BATCH, "channel": self._channel})
                if row is None or row.unparked < UNPARK_BATCH:
                    break
        except Exception as exc:
            log.warning("taking back parked jobs failed: %s", first_line(exc))
            self.next_unpark = time.monotonic() + self._poll_interval
