"""Translate pgtaskq jobs into django.tasks ``TaskResult`` objects.

pgtaskq keeps one row per job with the attempt count, the last worker, the last error
(a formatted traceback) and the JSON result; django.tasks wants a status, a list of errors
and one worker id per attempt. The mapping, and what it cannot know, in one place:

- ``queued`` -> READY (also between retries), ``running`` -> RUNNING,
  ``succeeded`` -> SUCCESSFUL, ``failed`` and ``cancelled`` -> FAILED.
- ``errors`` has one entry per failed attempt, oldest first, from ``Job.failed_attempts``
  (schema version 8 records each failed attempt's traceback and worker, the latest 100).
- ``worker_ids`` has one entry per attempt (``attempts == len(worker_ids)``, as django.tasks
  defines it): each failed attempt's recorded worker, and the row's worker for the attempt
  running or the one that succeeded. Attempts that failed before schema version 8, or
  before a job's latest 100 failures, left no record: they show ``"unknown"`` (before
  version 8 the last error alone stands for their errors).
"""

from __future__ import annotations

import builtins
import re
from datetime import datetime
from typing import Any

from pgtaskq.contrib.django._compat import Task, TaskError, TaskResult, TaskResultStatus
from pgtaskq.job import Job

STATUS_MAP = {
    "queued": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "succeeded": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}

# The line a formatted traceback ends with: "package.module.ClassName: message".
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s|:$|$)")


# How the worker words retries and cancellations it recorded itself.
_PGTASKQ_OUTCOMES = {"Retry": "pgtaskq.Retry", "Cancelled": "pgtaskq.Cancelled",
                     "cancelled": "pgtaskq.Cancelled"}


def exception_class_path(error_text: str) -> str:
    """The dotted path of the exception a formatted traceback ends with.

    Built-in exceptions print bare (``ValueError: ...``); they get a ``builtins.`` prefix
    so ``TaskError.exception_class`` can import them.
    """
    for line in reversed(error_text.strip().splitlines()):
        if line[:1].isspace():
            continue
        match = _EXCEPTION_LINE.match(line)
        if match:
            name = match.group(1)
            if name in _PGTASKQ_OUTCOMES:
                return _PGTASKQ_OUTCOMES[name]
            if "." not in name:
                return f"builtins.{name}" if hasattr(builtins, name) else name
            return name
    return "builtins.Exception"


def task_error(error_text: str) -> TaskError:
    return TaskError(
        exception_class_path=exception_class_path(error_text), traceback=error_text
    )


def task_errors(job: Job) -> list[TaskError]:
    """One TaskError per failed attempt of ``job``, oldest first."""
    errors = [task_error(str(failed["error"])) for failed in job.failed_attempts
              if failed.get("error")]
    recorded = {failed.get("attempt") for failed in job.failed_attempts}
    # a final error without a record of its own: an install before schema version 8
    unrecorded_final = job.status in ("failed", "cancelled") and job.attempts not in recorded
    if job.last_error and (not job.failed_attempts or unrecorded_final):
        errors.append(task_error(job.last_error))
    return errors


def worker_ids(job: Job) -> list[str]:
    """The worker of each attempt of ``job``, in attempt order."""
    by_attempt = {failed.get("attempt"): failed.get("worker_id")
                  for failed in job.failed_attempts}
    ids = []
    for attempt in range(1, max(job.attempts, 0) + 1):
        worker = by_attempt.get(attempt)
        if worker is None and attempt == job.attempts:
            worker = job.worker_id  # the attempt running, or the one that succeeded
        ids.append(str(worker) if worker is not None else "unknown")
    return ids


def result_from_job(task: Task, job: Job, backend_alias: str) -> TaskResult:
    """A TaskResult showing ``job`` as it was read from the database."""
    status = STATUS_MAP[job.status]
    result = TaskResult(
        task=task,
        id=str(job.id),
        status=status,
        enqueued_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        last_attempted_at=job.started_at,
        args=job.args,
        kwargs=job.kwargs,
        backend=backend_alias,
        errors=task_errors(job),
        worker_ids=worker_ids(job),
    )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", job.result)
    return result


def set_fields(result: TaskResult, **fields: Any) -> None:
    """TaskResult is a frozen dataclass; backends update it in place all the same."""
    for name, value in fields.items():
        object.__setattr__(result, name, value)


def aware(moment: datetime | None) -> datetime | None:
    """django.tasks allows naive ``run_after`` when USE_TZ is off; pgtaskq needs aware."""
    if moment is None or moment.tzinfo is not None:
        return moment
    from django.utils import timezone

    return timezone.make_aware(moment, timezone.get_default_timezone())
