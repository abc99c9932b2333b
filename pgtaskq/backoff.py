"""The growing pause after consecutive failures, shared by every loop of the worker that
talks to the database (claims, acknowledgements, LISTEN, the periodic threads, cron, the
hand-back): a database restart must make none of them spin, nor wait longer than ``cap``.
Migrations that give way to a lock (``pgtaskq.migrate``) pause by it too, which is why it
lives outside the worker package (the producer side never imports that).
"""

from __future__ import annotations


class Backoff:
    """``first`` seconds after one failure, doubling with each further one, at most ``cap``."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0
        """Failures since the last success."""

    def failed(self) -> float:
        """Count a failure; return how long to pause before the next try."""
        self.failures += 1
        return min(self.cap, self.first * 2 ** (self.failures - 1))

    def succeeded(self) -> bool:
        """Count a success; True if it ends a run of failures (worth a log line)."""
        recovered = self.failures > 0
        self.failures = 0
        return recovered
