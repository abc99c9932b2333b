"""django.tasks tasks (and one native pgtaskq task) for the Django tests and their worker.

The worker subprocess records the task_started/task_finished signals it sends in the file
``$DJANGOTEST_SIGNAL_LOG`` (one JSON line each), so a test can check what receivers saw.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

try:
    from django.tasks import task
    from django.tasks.signals import task_finished, task_started
except ImportError:
    from django_tasks import task
    from django_tasks.signals import task_finished, task_started

from pgtaskq.contrib.django import get_queue


@task
def add(a: int, b: int) -> int:
    return a + b


@task(takes_context=True)
def flaky(context: Any, succeed_on: int) -> int:
    """Fails until attempt ``succeed_on``; returns the attempt that succeeded."""
    if context.attempt < succeed_on:
        raise RuntimeError(f"attempt {context.attempt} fails on purpose")
    return context.attempt


@task
def always_fails() -> None:
    raise ValueError("this task never works")


@task
async def async_add(a: int, b: int) -> int:
    return a + b


@task(takes_context=True)
def hang_first_attempt(context: Any) -> int:
    """Stands for a job whose worker dies under it: attempt 1 never ends by itself."""
    if context.attempt == 1:
        threading.Event().wait(120)  # the test SIGKILLs the worker meanwhile
    return context.attempt


@task(priority=50, queue_name="reports")
def prioritized() -> str:
    return "ok"


@get_queue().task
def native_double(x: int) -> int:
    return 2 * x


def _recorder(name: str) -> Any:
    def record(sender: Any, task_result: Any, **kwargs: Any) -> None:
        path = os.environ.get("DJANGOTEST_SIGNAL_LOG")
        if not path:
            return
        line = {"signal": name, "id": task_result.id, "status": str(task_result.status),
                "attempts": task_result.attempts, "task": task_result.task.module_path}
        with open(path, "a") as log:
            log.write(json.dumps(line) + "\n")

    return record


task_started.connect(_recorder("started"), weak=False, dispatch_uid="djangotest.started")
task_finished.connect(_recorder("finished"), weak=False, dispatch_uid="djangotest.finished")


@task
def returns_a_set(marker: str) -> Any:
    """Has a side effect, then returns what JSON cannot hold."""
    path = os.environ.get("DJANGOTEST_SIDE_EFFECTS")
    if path:
        with open(path, "a") as effects:
            effects.write(marker + "\n")
    return {1, 2, 3}
