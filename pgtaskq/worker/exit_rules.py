"""When a worker should leave on its own: ``--burst``, ``--max-jobs``, ``--max-memory``.

A worker normally runs until it is told to stop. These rules make it stop by itself, the
graceful way (running jobs finish within the grace period, leased jobs not yet started go
back to the queue) and with exit status 0, so that a supervisor starts a fresh one or a
script goes on:

- burst: once nothing this worker could run is due (a claim made while it holds no job
  comes back empty), as RQ's ``--burst``: drain what is there, then exit;
- max jobs: after this many jobs have finished here; it never leases more than that;
- max memory: once the process's resident memory passes this many MiB (tasks that leak),
  looked at no more than once a second.

The main loop asks ``reason_to_stop`` once per iteration; the bookkeeping is a few integer
operations per claim and per finished job.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time

MEMORY_CHECK_INTERVAL = 1.0
"""Least seconds between two readings of the process's memory."""


def resident_mib() -> float:
    """The process's resident memory now, in MiB (its peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class ExitRules:
    """The stop conditions of one worker and what they need to know."""

    def __init__(self, *, burst: bool = False, max_jobs: int | None = None,
                 max_memory_mib: float | None = None) -> None:
        self.burst = burst
        self.max_jobs = max_jobs
        self.max_memory_mib = max_memory_mib
        self._lock = threading.Lock()
        self._claimed = 0
        self._finished = 0
        self._idle_claim_empty = False
        self._next_memory_check = 0.0

    @property
    def active(self) -> bool:
        return self.burst or self.max_jobs is not None or self.max_memory_mib is not None

    def cap(self, limit: int) -> int:
        """The claim's limit, lowered so that no more than ``max_jobs`` are ever leased."""
        if self.max_jobs is None:
            return limit
        with self._lock:
            return max(0, min(limit, self.max_jobs - self._claimed))

    def claimed(self, count: int, held_before: int) -> None:
        """A claim returned ``count`` jobs while the worker held ``held_before``."""
        with self._lock:
            self._claimed += count
            self._idle_claim_empty = count == 0 and held_before == 0

    def finished(self, held_now: int) -> bool:
        """A job finished; True when the main loop should look at the rules now."""
        with self._lock:
            self._finished += 1
            if held_now == 0:
                self._idle_claim_empty = False  # a finished job may have enqueued more
            return (self.burst and held_now == 0) or (
                self.max_jobs is not None and self._finished >= self.max_jobs)

    def needs_idle_claim(self, held: int) -> bool:
        """Burst: the worker holds nothing and has not yet looked for due jobs since."""
        with self._lock:
            return self.burst and held == 0 and not self._idle_claim_empty

    def reason_to_stop(self, held: int) -> str | None:
        """Why the worker should stop now, or None."""
        with self._lock:
            if self.burst and held == 0 and self._idle_claim_empty:
                return f"burst: no job due, {self._finished} run"
            if self.max_jobs is not None and self._finished >= self.max_jobs:
                return f"--max-jobs: {self._finished} jobs run"
        if self.max_memory_mib is not None:
            now = time.monotonic()
            if now >= self._next_memory_check:
                self._next_memory_check = now + MEMORY_CHECK_INTERVAL
                used = resident_mib()
                if used > self.max_memory_mib:
                    return (f"--max-memory: {used:.0f} MiB resident, over "
                            f"{self.max_memory_mib:g} MiB")
        return None
