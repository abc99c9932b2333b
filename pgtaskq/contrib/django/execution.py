"""Worker side of the django.tasks backend: run one attempt of a django.tasks task.

The pgtaskq task registered for a django.tasks task is a small runner that builds the
TaskResult of the running job (one read of the job row: its worker, start time and the
previous attempt's error), sends ``task_started``, calls the function (with a
``TaskContext`` whose ``attempt`` is pgtaskq's attempt number when the task takes
context), and sends ``task_finished``. Exceptions propagate unchanged, so pgtaskq's
retries, ``Retry`` and ``Cancelled`` behave as for any other task.

Signals are sent with ``send_robust``: a broken receiver is logged but must not turn a
successful job into a failed one (which would run it again).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from django.utils import timezone
from django.utils.module_loading import import_string

from pgtaskq.context import current_job
from pgtaskq.contrib.django import results
from pgtaskq.contrib.django._compat import (
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultStatus,
    normalize_json,
    task_backends,
    task_finished,
    task_started,
)
from pgtaskq.contrib.django.conf import get_queue
from pgtaskq.errors import Cancelled, FinalFailure

logger = logging.getLogger("pgtaskq.django")

# Every django.tasks task created for a pgtaskq backend, by module path. Module-level rather
# than per backend instance: django.tasks builds one backend object per thread.
registered_tasks: dict[str, Task] = {}


def lookup_task(path: str) -> Task:
    """The django.tasks task registered under ``path`` (importing its module if needed)."""
    task = registered_tasks.get(path)
    if task is None:
        task = import_string(path)
    return task


def make_runner(alias: str, path: str) -> Callable[..., Any]:
    """The function pgtaskq calls for jobs of the django.tasks task at ``path``."""

    def run_django_task(*args: Any, **kwargs: Any) -> Any:
        return run_attempt(alias, path, list(args), dict(kwargs))

    run_django_task.__qualname__ = run_django_task.__name__ = f"django_task[{path}]"
    return run_django_task


def run_attempt(alias: str, path: str, args: list, kwargs: dict) -> Any:
    """Run the current job's attempt of the django.tasks task ``path``."""
    job_context = current_job()
    backend = task_backends[alias]
    task = lookup_task(path)
    result = _running_result(task, alias, job_context.id, job_context.attempt, args, kwargs)
    _send(task_started, backend, result)
    try:
        if task.takes_context:
            value = task.call(TaskContext(task_result=result), *args, **kwargs)
        else:
            value = task.call(*args, **kwargs)
    except Exception as exc:
        retrying = (
            job_context.attempt < job_context.max_attempts and not isinstance(exc, Cancelled)
        )
        _finish_failed(backend, result, exc, retrying)
        raise
    try:
        value = normalize_json(value)
    except Exception as exc:
        # The body ran and did its work: another attempt would repeat it and fail the
        # same way. Fail the job once, as django.tasks' ImmediateBackend does.
        _finish_failed(backend, result, exc, retrying=False)
        raise FinalFailure(f"the return value of {path} is not JSON: {exc}") from exc
    results.set_fields(
        result, status=TaskResultStatus.SUCCESSFUL, finished_at=timezone.now(),
        _return_value=value,
    )
    _send(task_finished, backend, result)
    return value


def _finish_failed(backend: Any, result: TaskResult, exc: Exception, retrying: bool) -> None:
    error = TaskError(
        exception_class_path=f"{type(exc).__module__}.{type(exc).__qualname__}",
        traceback="".join(traceback.format_exception(exc)),
    )
    results.set_fields(
        result,
        status=TaskResultStatus.READY if retrying else TaskResultStatus.FAILED,
        finished_at=None if retrying else timezone.now(),
        errors=[*result.errors, error],
    )
    _send(task_finished, backend, result)


def _running_result(
    task: Any, alias: str, job_id: int, attempt: int, args: list, kwargs: dict
) -> TaskResult:
    now = timezone.now()
    # On Django's connection: an inline run in a TestCase sees the test's own jobs.
    job = get_queue().read_job(job_id)
    if job is not None:
        # worker_ids: each failed attempt's worker, then this worker for this attempt
        result = results.result_from_job(task, job, alias)
    else:  # pragma: no cover - the row of a running job cannot vanish
        result = TaskResult(
            task=task, id=str(job_id), status=TaskResultStatus.RUNNING, enqueued_at=None,
            started_at=now, finished_at=None, last_attempted_at=now, args=args,
            kwargs=kwargs, backend=alias, errors=[], worker_ids=["unknown"] * attempt,
        )
    results.set_fields(
        result,
        status=TaskResultStatus.RUNNING,
        started_at=result.started_at or now,
        last_attempted_at=result.started_at or now,
        finished_at=None,
    )
    return result


def _send(signal: Any, backend: Any, result: TaskResult) -> None:
    for receiver, response in signal.send_robust(type(backend), task_result=result):
        if isinstance(response, Exception):
            logger.error(
                "django.tasks signal receiver %r failed for job %s", receiver, result.id,
                exc_info=response,
            )
