"""``Task``: a plain function registered on a TaskQueue, with its enqueue defaults.

A task stays callable as the function it wraps (``send_email(...)`` runs it here and now);
``.enqueue(...)`` puts a job in the queue instead, and ``.using(...)`` returns a copy of
the enqueue call with per-call options, so task arguments and queue options never share a
namespace.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pgtaskq import options

if TYPE_CHECKING:
    from pgtaskq.queue import TaskQueue


class Task:
    """A registered task: call it to run the function, ``enqueue`` it to run it later."""

    def __init__(
        self,
        queue_app: TaskQueue,
        func: Callable[..., Any],
        *,
        name: str,
        queue: str,
        priority: int,
        max_attempts: int,
        timeout: float | None,
        force_cancel: bool = False,
    ) -> None:
        self.tq = queue_app
        self.func = func
        self.name = options.check_task_name(name)
        self.queue = options.check_queue(queue)
        self.priority = options.check_priority(priority)
        self.max_attempts = options.check_max_attempts(max_attempts)
        self.timeout = options.check_timeout(timeout)
        if not isinstance(force_cancel, bool):
            raise TypeError(f"force_cancel must be a bool, got {force_cancel!r}")
        self.force_cancel = force_cancel
        """With ``--pool process``: a cancel request the task does not honour within the
        kill grace stops its process (the job ends cancelled). Threads cannot be stopped."""
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"

    def enqueue(self, *args: Any, **kwargs: Any) -> int:
        """Enqueue a job that calls this task with ``args`` and ``kwargs``; return its id."""
        return self.tq.enqueue(self.name, args=args, kwargs=kwargs)

    def using(self, **enqueue_options: Any) -> BoundEnqueue:
        """Options for one enqueue: queue, priority, delay, run_at, dedupe_key,
        max_attempts, conn. Unknown names raise ``TypeError``."""
        options.check_option_names(enqueue_options, options.ENQUEUE_OPTIONS, "Task.using()")
        return BoundEnqueue(self, enqueue_options)


class BoundEnqueue:
    """What ``Task.using(...)`` returns: ``.enqueue(*args, **kwargs)`` with those options."""

    def __init__(self, task: Task, enqueue_options: dict[str, Any]) -> None:
        self.task = task
        self.options = enqueue_options

    def using(self, **enqueue_options: Any) -> BoundEnqueue:
        options.check_option_names(enqueue_options, options.ENQUEUE_OPTIONS, "Task.using()")
        return BoundEnqueue(self.task, {**self.options, **enqueue_options})

    def enqueue(self, *args: Any, **kwargs: Any) -> int:
        return self.task.tq.enqueue(self.task.name, args=args, kwargs=kwargs, **self.options)
