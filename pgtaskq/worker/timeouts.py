"""Task timeouts: the held jobs that have one, and what happens when it passes.

A timed-out job's cancel event is set and its attempt will count as failed, but its slot
stays busy until the function returns: a thread cannot be killed (the process pool stops
the job's process ``kill_grace`` seconds later, ``pgtaskq.worker.process_pool``). Most tasks have no
timeout; looking only at those that do keeps the main loop's per-iteration work
independent of how many jobs are held. Main thread only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgtaskq.worker.held import HeldJob

log = logging.getLogger("pgtaskq.worker")


class Timeouts:
    """The held jobs with a timeout, until they finish."""

    def __init__(self, kill_grace: float | None = None) -> None:
        self._timed: dict[int, HeldJob] = {}
        self._kill_grace = kill_grace
        """Process pool: seconds until the job's process is stopped (None: threads)."""

    def watch(self, job: HeldJob) -> None:
        self._timed[job.id] = job

    def jobs(self) -> list[HeldJob]:
        """Held jobs that have a timeout, forgetting finished ones."""
        if not self._timed:
            return []
        for job_id in [i for i, j in self._timed.items() if j.finished]:
            del self._timed[job_id]
        return list(self._timed.values())

    def deadlines(self) -> list[float]:
        """Monotonic times at which a running job's timeout passes."""
        return [d for d in (job.deadline for job in self.jobs()) if d is not None]

    def enforce(self, now: float) -> None:
        for job in self.jobs():
            deadline = job.deadline
            if deadline is not None and now >= deadline and not job.context.timed_out:
                job.context.timed_out = True
                job.context.request_cancel()
                if self._kill_grace is not None:
                    log.warning("job %d (%s) exceeded its timeout of %ss; its cancel event "
                                "is set and its process is stopped if it still runs in %gs",
                                job.id, job.task, job.timeout, self._kill_grace)
                    continue
                log.warning("job %d (%s) exceeded its timeout of %ss; its cancel event is "
                            "set and the attempt will count as failed. Its slot stays busy "
                            "until the function returns", job.id, job.task, job.timeout)
