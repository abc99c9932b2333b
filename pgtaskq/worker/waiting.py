"""A worker tells producers when it waits for work, so that only then do they notify.

PostgreSQL serialises the commits of all transactions that sent a NOTIFY on one lock held
across their WAL flush, so an enqueue that notifies queues behind every other one that
does. An enqueue therefore notifies only when ``wake_wanted(queue)`` (schema version 9)
finds a live worker of that queue whose ``waiting_since`` is set, or a worker of an earlier
release, which never announces and so is always taken as waiting.

The handshake, which loses no wake-up:

- The worker announces (``waiting_since = now()``, committed) after a claim came back
  short, and then claims once more before it sleeps. The producer reads ``waiting_since``
  in a VOLATILE function, so with a snapshot taken after its INSERT.
- A producer whose read came after the announcement's commit sees it and notifies. One
  whose read came before it had inserted (and so had a transaction id) before the
  announcement: it either committed before the worker's next claim, which then sees the
  job, or was still in progress when the worker took a snapshot right after announcing.
  The worker keeps those transaction ids and claims again as soon as they have ended
  (looked up with ``txid_status``, soon at first, then backing off to the poll interval:
  a long transaction that enqueued with ``conn=`` is picked up at worst one poll interval
  after its commit, as without notifications).
- A claim that comes back full twice in a row means the worker has a backlog: it claims
  again by itself whenever a slot frees, so it withdraws the announcement and producers
  stop notifying. The next short claim announces again, as above.

Poll-only workers, and workers whose LISTEN connection is down, never announce (nothing
would reach them); they are never woken, as before, and poll.

Since schema version 11, producers call ``wake_wanted()`` only while the *wake gate* is
open, a sequence that triggers on ``workers`` open when a row starts wanting wake-ups
(before the announcing transaction commits, so the handshake above is unchanged) and that
``close_wake_gate()`` closes only when no live worker wants any: withdrawing and stopping
close it by trigger, the rescuer after a crashed waiter (``pgtaskq.sql.migrations.V11``).
Nothing here calls it: the announcement's UPDATE is what opens the gate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pgtaskq.errors import first_line
from pgtaskq.sql import worker as worker_sql

if TYPE_CHECKING:
    from pgtaskq.worker.database import Statements

log = logging.getLogger("pgtaskq.worker")

FIRST_CHECK = 0.001
"""Seconds after announcing before looking whether the producers it may have crossed have
ended; each later look waits twice as long, up to the poll interval."""

FULL_CLAIMS_BEFORE_WITHDRAWING = 2
"""Full claims in a row after which the announcement is withdrawn. One is not enough: a
worker with one free slot fills it with every claim, and would otherwise withdraw and
announce again for every job it runs."""


class Waiting:
    """The worker's announcement that it waits for work. Main thread only (no lock)."""

    def __init__(self, db: Statements, worker_id: int, *, max_backoff: float,
                 listening: Callable[[], bool]) -> None:
        self._db = db
        self._listening = listening
        self._worker_id = worker_id
        self._max_backoff = max_backoff
        self.announced = False
        self._full_claims = 0
        self._crossed: list[int] = []  # transactions that may have missed the announcement
        self._next_check: float | None = None
        self._backoff = FIRST_CHECK

    def claimed(self, full: bool) -> bool:
        """A claim came back ``full`` or short; True: the caller must claim once more now
        (it has just announced, and a job committed before that may not be in the claim)."""
        if full:
            self._full_claims += 1
            if self.announced and self._full_claims >= FULL_CLAIMS_BEFORE_WITHDRAWING:
                self._withdraw()
            return False
        self._full_claims = 0
        if self.announced or not self._listening():
            return False
        return self._announce()

    def deadline(self) -> float | None:
        """When to look at the crossed transactions (monotonic; None: nothing to look at)."""
        return self._next_check

    def claim_due(self, now: float) -> bool:
        """At the deadline: True when crossed producers have ended (their jobs may be there)."""
        if self._next_check is None or now < self._next_check:
            return False
        try:
            row = self._db.fetchone(worker_sql.STILL_IN_PROGRESS, {"xids": self._crossed})
        except Exception as exc:
            log.debug("looking up transactions in progress failed: %s", first_line(exc))
            row = (self._crossed,)  # look again later, claim then
        still = list(row[0] or []) if row else []
        ended = len(still) < len(self._crossed)
        self._crossed = still
        if still:
            self._backoff = min(self._max_backoff, self._backoff * 2)
            self._next_check = time.monotonic() + self._backoff
        else:
            self._next_check = None
        return ended

    def _announce(self) -> bool:
        try:
            self._db.execute(worker_sql.ANNOUNCE_WAITING,
                             {"worker_id": self._worker_id, "waiting": True})
            # a snapshot taken after the announcement committed: whoever is still in
            # progress may have read the workers table before it
            row = self._db.fetchone(worker_sql.IN_PROGRESS)
        except Exception as exc:
            log.debug("announcing waiting failed: %s", first_line(exc))
            return False
        self.announced = True
        self._crossed = list(row[0] or []) if row else []
        self._backoff = FIRST_CHECK
        self._next_check = time.monotonic() + FIRST_CHECK if self._crossed else None
        return True

    def _withdraw(self) -> None:
        try:
            self._db.execute(worker_sql.ANNOUNCE_WAITING,
                             {"worker_id": self._worker_id, "waiting": False})
        except Exception as exc:
            log.debug("withdrawing the waiting announcement failed: %s", first_line(exc))
            return
        self.announced = False
        self._crossed = []
        self._next_check = None
