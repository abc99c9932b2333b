"""Job outcome hooks: ``@tq.on_success``, ``@tq.on_retry``, ``@tq.on_failure``.

Error trackers, metrics and audit logs want to hear how each attempt ended without wrapping
every task. Hooks run in the slot thread right after the task function (and the job
middlewares) returned or raised, while ``current_job()`` still answers, and before the
outcome is written: a slow hook delays that job's acknowledgement, nothing else.

- ``on_success(job, result)``: the attempt succeeded; ``result`` is what the task returned.
- ``on_retry(job, error)``: the attempt failed (an exception, ``Retry``, a timeout) and the
  job will run again (``job.attempt < job.max_attempts``).
- ``on_failure(job, error)``: the last attempt failed, or one that cannot be retried
  (``FinalFailure``, whose cause is ``error``); the job is now ``failed``.

A timeout's ``error`` is a ``TimeoutError``. Cancelled jobs call no hook, nor do jobs the
worker fails before running them (arguments it cannot decode, a task it lacks: logged at
ERROR by the main loop, which must not wait for user code). A hook that raises
is logged and ignored: it never changes the job's outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pgtaskq.context import JobContext

log = logging.getLogger("pgtaskq.worker")

SuccessHook = Callable[[JobContext, Any], Any]
ErrorHook = Callable[[JobContext, BaseException], Any]


class JobHooks:
    """The hooks registered on one TaskQueue."""

    def __init__(self) -> None:
        self.success: list[SuccessHook] = []
        self.retry: list[ErrorHook] = []
        self.failure: list[ErrorHook] = []

    def __bool__(self) -> bool:
        return bool(self.success or self.retry or self.failure)

    def fire(self, job: JobContext, kind: str, error: BaseException | None,
             result: Any) -> None:
        """Call the hooks for an attempt that ended as ``kind`` (an ``Outcome`` kind)."""
        if kind == "succeeded":
            self._call(self.success, job, result)
        elif kind in ("failed", "retry", "discarded") and error is not None:
            final = kind == "discarded" or job.attempt >= job.max_attempts
            hooks = self.failure if final else self.retry
            self._call(hooks, job, error)

    @staticmethod
    def _call(hooks: list[Any], job: JobContext, value: Any) -> None:
        for hook in hooks:
            try:
                hook(job, value)
            except Exception:
                log.exception("job %d (%s): hook %s raised", job.id, job.task,
                              getattr(hook, "__qualname__", hook))
