"""``JobContext`` and ``current_job()``: what a running task may know about its job.

Each slot thread sets the context before calling the task function and clears it after,
so ``current_job()`` works from any depth of the task's call stack without passing the
job around. Cancellation is a ``threading.Event`` set by the worker (on a cancel NOTIFY,
a heartbeat, or the task's timeout): checking it costs no database round trip.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pgtaskq.errors import Cancelled, PgtaskqError

_local = threading.local()


@dataclass
class JobContext:
    """The running job: id, task, queue, attempt (1-based), max_attempts, the worker's id,
    and cancellation."""

    id: int
    task: str
    queue: str
    attempt: int
    max_attempts: int
    worker_id: int | None = None
    """Registry id of the worker running the job (``pgtaskq stats`` lists workers)."""
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    timed_out: bool = False

    @property
    def cancel_requested(self) -> bool:
        """True once ``tq.cancel(id)`` was called for this job or its timeout passed."""
        return self.cancel_event.is_set()

    def check_cancelled(self) -> None:
        """Raise ``Cancelled`` if a cancel was requested; call it between units of work."""
        if self.cancel_event.is_set():
            reason = "timed out" if self.timed_out else "cancel requested"
            raise Cancelled(f"job {self.id} ({self.task}): {reason}")


def current_job() -> JobContext:
    """The context of the job running in this thread; ``PgtaskqError`` outside a job."""
    context = getattr(_local, "job", None)
    if context is None:
        raise PgtaskqError("current_job() called outside a running pgtaskq job")
    return context


def set_current(context: JobContext | None) -> None:
    """Bind ``context`` to the calling thread (slots only)."""
    _local.job = context
