"""How one attempt of a job ended: what a slot hands the completer, and what the rollups
count.

Its own module so that the slots and the rollups, which only make and read outcomes, do
not import the completer, which writes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pgtaskq.storable import ERROR_MAX_CHARS, safe_text

if TYPE_CHECKING:
    from pgtaskq.worker.held import HeldJob


@dataclass(slots=True)
class Outcome:
    """How one attempt ended, as the completer writes it."""

    job_id: int
    attempt: int
    kind: str  # succeeded | failed | retry | cancelled | discarded (failed, never retried)
    error: str | None = None
    result: str | None = None  # JSON text
    delay: float | None = None  # retry delay override, seconds
    queue: str = ""
    task: str = ""
    wait_ms: float = 0.0
    run_ms: float = 0.0
    max_attempts: int = 1  # tells a retried attempt from a final failure in the rollups

    @classmethod
    def _of(cls, job: HeldJob, kind: str, **fields: object) -> Outcome:
        error = fields.get("error")
        if isinstance(error, str):  # NUL, lone surrogates, megabytes: see pgtaskq.storable
            fields["error"] = safe_text(error, ERROR_MAX_CHARS)
        now = time.monotonic()
        run_ms = (now - job.running_since) * 1000 if job.running_since else 0.0
        return cls(job.id, job.attempt, kind, queue=job.queue, task=job.task,
                   wait_ms=job.wait_ms, run_ms=run_ms, max_attempts=job.max_attempts,
                   **fields)  # type: ignore[arg-type]

    @classmethod
    def succeeded(cls, job: HeldJob, result: str | None) -> Outcome:
        return cls._of(job, "succeeded", result=result)

    @classmethod
    def failed(cls, job: HeldJob, error: str) -> Outcome:
        return cls._of(job, "failed", error=error)

    @classmethod
    def discarded(cls, job: HeldJob, error: str) -> Outcome:
        """Failed for good, whatever attempts remain (``FinalFailure``, or a job the
        worker cannot decode or has no task for: every attempt would fail the same way)."""
        return cls._of(job, "discarded", error=error)

    @classmethod
    def retry(cls, job: HeldJob, delay: float | None, error: str) -> Outcome:
        return cls._of(job, "retry", error=error, delay=delay)

    @classmethod
    def cancelled(cls, job: HeldJob, error: str) -> Outcome:
        return cls._of(job, "cancelled", error=error)
