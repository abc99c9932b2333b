"""Sentry for pgtaskq workers: every failed attempt reported, the last one as an error.

::

    import sentry_sdk
    from pgtaskq.contrib import sentry as pgtaskq_sentry

    sentry_sdk.init(dsn=...)
    pgtaskq_sentry.instrument(tq)        # in the module the worker imports

Each job runs in its own Sentry isolation scope tagged ``pgtaskq.task``,
``pgtaskq.job_id``, ``pgtaskq.attempt`` and ``pgtaskq.queue`` (so anything the task
captures or logs to Sentry carries them too), with the job in the ``pgtaskq`` context and
the task as the transaction name. An exception that fails an attempt is captured
(mechanism ``pgtaskq``, unhandled): at level ``warning`` while attempts remain, ``error``
for the last one. A timeout is captured as a message at the same levels. ``Retry`` with
attempts left and cancellations are control flow, not errors: never reported.

It is a job middleware (``TaskQueue.add_job_middleware``), installed once per queue;
needs ``pip install 'pgtaskq[sentry]'``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import sentry_sdk
    from sentry_sdk.utils import event_from_exception
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "pgtaskq.contrib.sentry needs sentry-sdk: pip install 'pgtaskq[sentry]'"
    ) from exc

from pgtaskq.context import JobContext
from pgtaskq.errors import Cancelled, FinalFailure, Retry
from pgtaskq.queue import TaskQueue

MECHANISM = {"type": "pgtaskq", "handled": False}


def instrument(tq: TaskQueue) -> None:
    """Report the failures of ``tq``'s jobs to Sentry (idempotent)."""
    if sentry_job_middleware not in tq.job_middlewares:
        tq.add_job_middleware(sentry_job_middleware)


def sentry_job_middleware(job: JobContext, call_next: Callable[[], Any]) -> Any:
    """Run the job in a tagged isolation scope and capture what fails the attempt."""
    with sentry_sdk.isolation_scope() as scope:
        scope.set_tag("pgtaskq.task", job.task)
        scope.set_tag("pgtaskq.job_id", str(job.id))
        scope.set_tag("pgtaskq.attempt", str(job.attempt))
        scope.set_tag("pgtaskq.queue", job.queue)
        scope.set_context("pgtaskq", {"job_id": job.id, "task": job.task,
                                      "queue": job.queue, "attempt": job.attempt,
                                      "max_attempts": job.max_attempts,
                                      "worker_id": job.worker_id})
        scope.set_transaction_name(job.task, source="task")
        try:
            result = call_next()
        except (Retry, Cancelled) as exc:
            if job.timed_out:
                _capture_timeout(job)
            elif isinstance(exc, Retry) and _last_attempt(job):
                _capture_exception(job, exc)
            raise
        except BaseException as exc:
            if job.timed_out:
                _capture_timeout(job)
            elif isinstance(exc, FinalFailure):  # fails now, attempts left or not
                _capture_exception(job, exc.__cause__ or exc, final=True)
            elif not job.cancel_requested:
                _capture_exception(job, exc)
            raise
        if job.timed_out:
            _capture_timeout(job)
        return result


def _last_attempt(job: JobContext) -> bool:
    return job.attempt >= job.max_attempts


def _level(job: JobContext) -> str:
    return "error" if _last_attempt(job) else "warning"


def _capture_exception(job: JobContext, exc: BaseException, final: bool = False) -> None:
    client = sentry_sdk.get_client()
    if not client.is_active():
        return
    event, hint = event_from_exception(
        (type(exc), exc, exc.__traceback__), client_options=client.options,
        mechanism=MECHANISM)
    event["level"] = "error" if final else _level(job)
    sentry_sdk.capture_event(event, hint=hint)


def _capture_timeout(job: JobContext) -> None:
    sentry_sdk.capture_message(
        f"pgtaskq job {job.id} ({job.task}) exceeded its timeout", level=_level(job))
