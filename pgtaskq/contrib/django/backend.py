"""``PgtaskqBackend``: django.tasks on pgtaskq, with transactional enqueue and retries.

::

    TASKS = {"default": {
        "BACKEND": "pgtaskq.contrib.django.PgtaskqBackend",
        "QUEUES": ["default", "emails"],          # queue names tasks may use (below)
        "OPTIONS": {"MAX_ATTEMPTS": 5, "TIMEOUT": 600},
    }}

``QUEUES`` is Django's rule, not pgtaskq's: left out, only ``"default"`` is allowed (a
task with ``queue_name="emails"`` is refused at definition); ``[]`` allows every name.

Each django.tasks task becomes a pgtaskq task named after its ``module_path``, registered
on the project's queue when the task object is created (``task_class`` below). The worker
imports the apps' ``tasks`` modules, so every task is known there and runs with pgtaskq's
leases, retries and crash recovery. A job id is the ``TaskResult.id``; priorities are
passed through unchanged (both say "higher runs first", -100..100 fits pgtaskq's range).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from pgtaskq import options
from pgtaskq.contrib.django import results
from pgtaskq.contrib.django._compat import (
    BaseTaskBackend,
    InvalidTaskError,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    normalize_json,
    task_enqueued,
)
from pgtaskq.contrib.django.conf import get_queue
from pgtaskq.contrib.django.execution import make_runner, registered_tasks
from pgtaskq.errors import ConfigurationError
from pgtaskq.printable import printable

BACKEND_OPTIONS = ("MAX_ATTEMPTS", "TIMEOUT")



class PgtaskqTask(Task):
    """The backend's task class: creating one registers its pgtaskq counterpart."""

    __slots__ = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        backend = self.get_backend()
        if isinstance(backend, PgtaskqBackend):
            backend.register(self)


class PgtaskqBackend(BaseTaskBackend):
    """django.tasks backend whose jobs live in pgtaskq and run on ``pgtaskq worker``."""

    task_class = PgtaskqTask
    supports_defer = True
    supports_async_task = True  # Task.call() runs coroutines to completion in the slot
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        opts = {str(key).upper(): value for key, value in (self.options or {}).items()}
        unknown = sorted(set(opts) - set(BACKEND_OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"TASKS[{alias!r}]['OPTIONS']: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(BACKEND_OPTIONS)}"
            )
        self.max_attempts: int | None = (
            options.check_max_attempts(opts["MAX_ATTEMPTS"]) if "MAX_ATTEMPTS" in opts
            else None
        )
        self.timeout: float | None = options.check_timeout(opts.get("TIMEOUT"))

    # -- tasks --------------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[Any]:
        """``manage.py check``: the backend works only with pgtaskq's app installed.

        Without ``"pgtaskq.contrib.django"`` in ``INSTALLED_APPS``, ``migrate`` installs
        no schema and there is no ``manage.py pgtaskq``: the first enqueue would fail
        with a message about a missing schema, far from the cause.
        """
        from django.apps import apps
        from django.core import checks

        messages = list(super().check(**kwargs))
        if not apps.is_installed("pgtaskq.contrib.django"):
            messages.append(checks.Error(
                f"TASKS[{self.alias!r}] uses pgtaskq, but 'pgtaskq.contrib.django' is not "
                "in INSTALLED_APPS",
                hint="add it: 'migrate' then installs and upgrades pgtaskq's schema, and "
                     "'manage.py pgtaskq' runs the worker",
                obj=f"TASKS[{self.alias!r}]", id="pgtaskq.E002",
            ))
        return messages

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        try:
            options.check_queue(task.queue_name)
        except ValueError as exc:
            raise InvalidTaskError(str(exc)) from None

    def register(self, task: Task) -> None:
        """Make ``task`` runnable by pgtaskq workers (idempotent)."""
        path = task.module_path
        registered_tasks.setdefault(path, task)
        queue = get_queue()
        if path not in queue.tasks:
            queue.task(
                make_runner(self.alias, path),
                name=path,
                queue=task.queue_name,
                priority=task.priority,
                max_attempts=self.max_attempts,
                timeout=self.timeout,
            )

    # -- enqueue and results ------------------------------------------------------------

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Write the job on Django's connection: it exists iff the transaction commits."""
        self.validate_task(task)
        self.register(task)
        queue = get_queue()
        job_args = normalize_json(list(args))
        job_kwargs = normalize_json(dict(kwargs))
        job_id = queue.enqueue(
            task.module_path,
            job_args,
            job_kwargs,
            queue=task.queue_name,
            priority=task.priority,
            run_at=results.aware(task.run_after),
            max_attempts=self.max_attempts,
        )
        result = TaskResult(
            task=task,
            id=str(job_id),
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=job_args,
            kwargs=job_kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )

        def announce() -> None:
            task_enqueued.send(type(self), task_result=result)

        # The job only exists once the caller's transaction commits; so does the signal.
        if queue.database is not None:
            transaction.on_commit(announce, using=queue.database)
        else:
            announce()
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The job's current state, read on Django's connection (own transaction included)."""
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        job = get_queue().read_job(job_id)
        if job is None:
            raise TaskResultDoesNotExist(result_id)
        return results.result_from_job(self._task_of(job.task, result_id), job, self.alias)

    def _task_of(self, path: str, result_id: str) -> Task:
        """The registered task of a job. Never ``import_string(path)``: ``path`` comes from
        the row's ``task`` column, which whoever can enqueue writes, and importing the
        module it names would run that module's code in this process."""
        task = registered_tasks.get(path)
        if not isinstance(task, Task):
            raise TaskResultDoesNotExist(
                f"{result_id} is not a job of a django.tasks task registered in this "
                f"process ({printable(path)}); import the module that defines it"
            )
        return task
