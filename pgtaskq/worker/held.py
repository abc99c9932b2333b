"""The jobs a worker holds a lease on, shared by the main loop, slots, heartbeat, completer.

A job is held from the moment the claim returns it until its outcome is written (or it is
handed back): the heartbeat extends the lease of every held job, buffered or running, so a
prefetched job never expires while it waits for a slot, and a finished job stays covered
until its acknowledgement is flushed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pgtaskq.context import JobContext


@dataclass(slots=True)
class HeldJob:
    """A leased job and what the worker knows about its run."""

    id: int
    task: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int
    max_attempts: int
    wait_ms: float
    """How long the job waited between its run_at and this lease."""
    context: JobContext
    timeout: float | None = None
    func: Callable[..., Any] | None = None
    """The task's function, looked up once when the job was claimed (None: not
    registered in this worker; such a job is failed at the claim)."""
    running_since: float | None = None
    """``time.monotonic()`` when a slot started it (None while buffered)."""
    finished: bool = False
    lease_lost: bool = False

    @property
    def deadline(self) -> float | None:
        """Monotonic time at which the task's timeout passes (None: no limit)."""
        if self.timeout is None or self.running_since is None or self.finished:
            return None
        return self.running_since + self.timeout


class HeldJobs:
    """Thread-safe map of job id to ``HeldJob``."""

    def __init__(self) -> None:
        self._jobs: dict[int, HeldJob] = {}
        self._lock = threading.Lock()
        self.settling = threading.Lock()
        """Held by the completer from sending an acknowledgement until its jobs are
        released, and by the heartbeat while it judges which leases it lost: a job whose
        row an acknowledgement just moved to the history is then either still being
        released (the heartbeat waits) or already gone from here, never a lost lease."""

    def add(self, job: HeldJob) -> None:
        with self._lock:
            self._jobs[job.id] = job

    def get(self, job_id: int) -> HeldJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def release(self, job_id: int, attempt: int) -> None:
        """Forget a job once its outcome is written (only the attempt we hold)."""
        self.release_all([(job_id, attempt)])

    def release_all(self, jobs: list[tuple[int, int]]) -> None:
        """``release`` each (job id, attempt), under one acquisition of the lock."""
        with self._lock:
            held = self._jobs
            for job_id, attempt in jobs:
                job = held.get(job_id)
                if job is not None and job.attempt == attempt:
                    del held[job_id]

    def snapshot(self) -> list[HeldJob]:
        with self._lock:
            return list(self._jobs.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def __iter__(self) -> Iterator[HeldJob]:
        return iter(self.snapshot())
