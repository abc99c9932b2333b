"""Notifications are hints: what a worker does with them, and how often at most.

Any role that can connect may ``NOTIFY`` on a worker's channel (PostgreSQL has no
privilege for it), so a payload proves nothing. A ``c:`` (cancel) notification only makes
the worker ask the database, for the jobs it holds, whether a cancel was really requested
(``cancel_requested``); a ``q:`` (new jobs) notification only makes it claim sooner. Both
are rate-limited, so a flood of forged payloads costs each worker a bounded number of
small statements instead of a claim or a look-up per payload:

- cancel look-ups at most every ``CANCEL_CHECK_INTERVAL`` (hints that arrive meanwhile
  wait for the next one, so a real cancel is applied within that interval);
- after a claim woken by a notification came back empty, notifications do not wake
  another claim for ``EMPTY_CLAIM_QUIET`` seconds (one that arrives meanwhile is served
  when the quiet period ends). A notification whose claim finds jobs costs nothing, so
  real enqueues are picked up at once.
"""

from __future__ import annotations

CANCEL_CHECK_INTERVAL = 0.1
"""Least seconds between two cancel look-ups prompted by notifications."""

EMPTY_CLAIM_QUIET = 0.05
"""Seconds notifications do not wake a claim after one they woke found nothing: a flood of
forged ``q:`` payloads then costs a worker at most 20 claims a second."""


class NotificationHints:
    """What the notifications asked for, released no faster than the limits allow.

    Used by the worker's main thread only (no lock).
    """

    def __init__(self, cancel_interval: float = CANCEL_CHECK_INTERVAL,
                 quiet: float = EMPTY_CLAIM_QUIET) -> None:
        self._cancel_interval = cancel_interval
        self._quiet = quiet
        self._cancel_ids: set[int] = set()
        self._next_cancel_check = 0.0
        self._quiet_until = 0.0
        self._claim_pending = False

    # -- cancel requests ------------------------------------------------------------------

    def hint_cancel(self, job_ids: set[int]) -> None:
        """Jobs a ``c:`` notification named (only those this worker holds are kept)."""
        self._cancel_ids |= job_ids

    def cancels_to_check(self, now: float) -> set[int]:
        """The hinted jobs to look up now (empty until the interval allows)."""
        if not self._cancel_ids or now < self._next_cancel_check:
            return set()
        ids, self._cancel_ids = self._cancel_ids, set()
        self._next_cancel_check = now + self._cancel_interval
        return ids

    # -- wake-ups ------------------------------------------------------------------------

    def notified(self, now: float) -> bool:
        """A ``q:`` notification for our queues arrived: may it wake a claim now?"""
        if now < self._quiet_until:
            self._claim_pending = True
            return False
        return True

    def pending_claim_due(self, now: float) -> bool:
        """A notification held back by the quiet period is due now (then forgotten)."""
        if self._claim_pending and now >= self._quiet_until:
            self._claim_pending = False
            return True
        return False

    def claimed(self, now: float, found: int, woken_by_notification: bool) -> None:
        """Report a claim: an empty one woken by a notification starts a quiet period."""
        if woken_by_notification and found == 0:
            self._quiet_until = now + self._quiet

    # -- when to wake up -----------------------------------------------------------------

    def deadline(self) -> float | None:
        """The monotonic time something held back becomes due (None: nothing waits)."""
        deadlines = []
        if self._cancel_ids:
            deadlines.append(self._next_cancel_check)
        if self._claim_pending:
            deadlines.append(self._quiet_until)
        return min(deadlines) if deadlines else None
