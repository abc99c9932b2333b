"""Declaring what a TaskQueue runs: tasks, cron schedules, job middlewares and hooks.

Declarations happen at import time, in web processes and workers alike; they touch no
database (the workers publish their tasks when they start, ``pgtaskq.declared``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pgtaskq import defaults
from pgtaskq.errors import ConfigurationError
from pgtaskq.hooks import ErrorHook, JobHooks, SuccessHook
from pgtaskq.task import Task

if TYPE_CHECKING:
    from pgtaskq.context import JobContext
    from pgtaskq.cron import Schedule

JobMiddleware = Callable[["JobContext", Callable[[], Any]], Any]


class TaskRegistration:
    """The declaring side of ``TaskQueue`` (which sets these attributes up)."""

    default_queue: str
    default_max_attempts: int
    tasks: dict[str, Task]
    job_middlewares: list[JobMiddleware]
    job_hooks: JobHooks
    schedules: dict[str, Schedule]

    # -- tasks --------------------------------------------------------------------------

    def task(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = defaults.PRIORITY,
        max_attempts: int | None = None,
        timeout: float | None = None,
        force_cancel: bool = False,
    ) -> Any:
        """Register a function as a task: ``@tq.task`` or ``@tq.task(name=..., ...)``.

        ``force_cancel=True``: with the process pool, ``tq.cancel(id)`` of a running job
        that does not stop by itself within the worker's kill grace stops its process."""

        def register(function: Callable[..., Any]) -> Task:
            task = Task(
                self,
                function,
                name=default_task_name(function) if name is None else name,
                queue=self.default_queue if queue is None else queue,
                priority=priority,
                max_attempts=(self.default_max_attempts if max_attempts is None
                              else max_attempts),
                timeout=timeout,
                force_cancel=force_cancel,
            )
            existing = self.tasks.get(task.name)
            if existing is not None and existing.func is not function:
                raise ConfigurationError(f"two tasks are named {task.name!r}")
            self.tasks[task.name] = task
            return task

        if func is not None:
            return register(func)
        return register

    def periodic(self, cron: str, **schedule: Any) -> Callable[[Callable[..., Any]], Task]:
        """Run a task on a cron schedule: ``@tq.periodic("*/5 * * * *", name="cleanup")``.

        The keywords (``name``, ``tz``, ``queue``, ``priority``, ``max_attempts``,
        ``args``, ``kwargs``, ``misfire``) are those of :func:`pgtaskq.cron.periodic`,
        which declares and checks them: every worker takes part and each tick enqueues
        exactly one job. Bad input raises ``ConfigurationError`` here, at import time.
        See docs/cron.rst. (``pgtaskq.cron`` and its croniter load on first use.)
        """
        from pgtaskq import cron as cron_schedules

        return cron_schedules.periodic(self, cron, **schedule)  # type: ignore[arg-type]

    def add_job_middleware(self, middleware: JobMiddleware) -> JobMiddleware:
        """Wrap every job the workers of this queue run: ``middleware(job, call_next)``.

        ``job`` is the JobContext, ``call_next()`` runs the rest of the chain and the task
        and returns its result; a middleware returns that result (or raises). It runs in
        the slot thread with ``current_job()`` set, so it can open a scope, a span or a
        transaction around the task. The first added is the outermost. Integrations use
        it (Django closes stale connections around each job). Usable as a decorator.
        """
        self.job_middlewares.append(middleware)
        return middleware

    def on_success(self, hook: SuccessHook) -> SuccessHook:
        """Call ``hook(job, result)`` after each successful attempt (``pgtaskq.hooks``)."""
        self.job_hooks.success.append(hook)
        return hook

    def on_retry(self, hook: ErrorHook) -> ErrorHook:
        """Call ``hook(job, error)`` after each failed attempt that will be retried."""
        self.job_hooks.retry.append(hook)
        return hook

    def on_failure(self, hook: ErrorHook) -> ErrorHook:
        """Call ``hook(job, error)`` when a job's last attempt failed."""
        self.job_hooks.failure.append(hook)
        return hook


def default_task_name(function: Callable[..., Any]) -> str:
    """``module.qualname`` of ``function``, as a worker importing its module will see it.

    A module run with ``python -m package.module`` is ``__main__`` in that process but
    ``package.module`` in the worker that imports it; naming its tasks ``__main__.f`` would
    leave their jobs queued for ever, so the module's real name is used.
    """
    module = function.__module__
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
    return f"{module}.{function.__qualname__}"
