"""How many jobs a worker may lease now: its slots, a prefetch buffer, and what it holds.

Invariant (as River's producer states it): a worker never leases more jobs than it can
start soon. Capacity is the slots plus a prefetch buffer sized from how long jobs take, so
buffered jobs wait for a slot about ``PREFETCH_HORIZON`` at most (short jobs get many, long
jobs none: one worker never hoards a backlog that idle workers could run), less what the
completer is behind by beyond ``MAX_UNACKNOWLEDGED``.

The main loop claims against it; the slots release it as each job finishes, and are told
whether to wake the main loop for a refill (once per refill, not once per job). One lock
guards every field, so each decision reads a consistent state. No database here: the
arithmetic is tested on its own (tests/test_capacity.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from pgtaskq import defaults

PREFETCH_HORIZON = 0.05
"""Seconds a prefetched job should wait for a slot, at the recent average job duration."""
PREFETCH_MAX_PER_SLOT = 32
"""Adaptive prefetch never buffers more than this many jobs per slot."""
MAX_UNACKNOWLEDGED = 2 * defaults.COMPLETER_BATCH_SIZE
"""Finished jobs whose outcome the completer has not written yet, beyond which the worker
stops leasing. Without this bound a worker whose jobs finish faster than its completer
writes them keeps leasing: the finished-but-running rows pile up (14,000 in a 20,000-job
drain), every COMPLETE and heartbeat then works through all of them, and acknowledgements
fell to ~100 jobs/s for a minute after the jobs themselves had run. (The default: the
worker passes twice its completer's batch size.)"""


class Capacity:
    """The worker's leasing budget: ``room()`` before a claim, ``claimed()`` after it,
    ``finished()`` from a slot when a job ends."""

    def __init__(self, concurrency: int, prefetch: int | None = None, *,
                 held: Callable[[], int] = lambda: 0,
                 max_unacknowledged: int = MAX_UNACKNOWLEDGED,
                 on_finished: Callable[[int], bool] | None = None) -> None:
        self.concurrency = concurrency
        self.prefetch = prefetch
        """Fixed prefetch, or None: adaptive, up to ``PREFETCH_MAX_PER_SLOT`` per slot."""
        self._held = held
        """Jobs held now, finished-but-unwritten ones included (``len(HeldJobs)``)."""
        self._max_unacknowledged = max_unacknowledged
        self._on_finished = on_finished
        """Told the jobs still outstanding after each finished one; True wakes the main
        loop (an exit rule may hold now: ``ExitRules.finished``)."""
        self._lock = threading.Lock()
        self._outstanding = 0  # claimed and not yet finished by a slot
        self._backlog = False  # the last claim came back full, or work waited for room
        self._wake_sent = False  # a slot has woken the main loop to refill; not yet served
        self._avg_run: float | None = None  # moving average of job durations, seconds

    # -- sizes --------------------------------------------------------------------------

    @property
    def prefetch_now(self) -> int:
        """Jobs that may wait for a slot now.

        Adaptive (the default): as many as the slots start within ``PREFETCH_HORIZON`` at
        the recent average job duration, at most ``PREFETCH_MAX_PER_SLOT`` per slot, none
        until a job has finished. The buffer must outlast a claim's round trip, or the
        slots run dry while the main thread waits for it: on no-op jobs (50,000 jobs,
        concurrency 8, 2 cores) fixed prefetches of 64, 128 and 256 drained 7,015, 8,204
        and 9,223 jobs/s before the hot path was trimmed, and the adaptive 256 drains
        15,000-18,000 since; on jobs of a second it is 0, as without prefetch.
        """
        if self.prefetch is not None:
            return self.prefetch
        average = self._avg_run
        if average is None:
            return 0
        limit = PREFETCH_MAX_PER_SLOT * self.concurrency
        if average <= 0:
            return limit
        return min(limit, int(self.concurrency * PREFETCH_HORIZON / average))

    @property
    def total(self) -> int:
        """Slots plus the prefetch buffer."""
        return self.concurrency + self.prefetch_now

    @property
    def refill_at(self) -> int:
        """Free capacity at which a worker with a backlog leases again.

        Without prefetch, every free slot is worth a lease at once. With prefetch, waiting
        until half the prefetch is free makes each claim (one commit) bring back several
        jobs instead of one, while the jobs still buffered keep the slots busy during the
        claim's round trip.
        """
        return max(1, self.prefetch_now // 2)

    @property
    def outstanding(self) -> int:
        """Jobs claimed and not yet finished by a slot."""
        with self._lock:
            return self._outstanding

    def free(self) -> int:
        """Capacity not taken by outstanding jobs."""
        with self._lock:
            return self.total - self._outstanding

    def room(self) -> int:
        """Jobs this worker may lease now: its free capacity, less what the completer is
        behind by beyond ``MAX_UNACKNOWLEDGED`` (held jobs include finished, unwritten ones).
        """
        with self._lock:
            outstanding = self._outstanding
        unacknowledged = self._held() - outstanding
        return self.total - outstanding - max(0, unacknowledged - self._max_unacknowledged)

    # -- decisions ----------------------------------------------------------------------

    def refill_due(self) -> bool:
        """The last claim came back full and enough capacity is free to lease again."""
        with self._lock:
            if not self._backlog:
                return False
        return self.room() >= self.refill_at

    def waiting_for_completer(self) -> bool:
        """A backlog, free slots, but no room until the completer writes outcomes (which
        does not wake the main loop: it must look again soon)."""
        with self._lock:
            if not self._backlog:
                return False
        return self.free() >= self.refill_at > self.room()

    # -- events -------------------------------------------------------------------------

    def claimed(self, count: int, limit: int) -> None:
        """A claim for ``limit`` jobs returned ``count``."""
        with self._lock:
            self._outstanding += count
            self._backlog = count == limit

    def note_backlog(self) -> None:
        """Work is known to wait while there is no room: the slot that frees room must
        wake the main loop, rather than the job waiting for the next poll."""
        with self._lock:
            self._backlog = True

    def dropped(self) -> None:
        """A claimed job ended without a slot (failed for good at the claim)."""
        with self._lock:
            self._outstanding -= 1

    def finished(self, run_seconds: float) -> bool:
        """A slot finished a job that ran ``run_seconds``: whether to wake the main loop
        (to refill, or to look at the exit rules)."""
        with self._lock:
            average = self._avg_run
            self._avg_run = (run_seconds if average is None
                             else 0.9 * average + 0.1 * run_seconds)
            self._outstanding -= 1
            # One wake-up per refill, not one per finished job: a pipe write and a loop
            # iteration per job were a large share of the worker's time on short jobs.
            wake = (self._backlog and not self._wake_sent
                    and self.total - self._outstanding >= self.refill_at)
            if wake:
                self._wake_sent = True
            outstanding = self._outstanding
        if self._on_finished is not None and self._on_finished(outstanding):
            wake = True
        return wake

    def woke(self) -> None:
        """The main loop woke up: the next refill may wake it again."""
        with self._lock:
            self._wake_sent = False
