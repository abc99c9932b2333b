"""The worker's view of a Django project: ``pgtaskq worker pgtaskq.contrib.django.runner:tq``.

Reading ``tq`` from this module (which ``manage.py pgtaskq worker`` does for you) sets
Django up, imports every task module so the worker knows every task (native pgtaskq tasks
and django.tasks tasks alike: a worker only leases jobs whose task it has), and wraps each
job in :func:`django_job_middleware`.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable
from typing import Any

from pgtaskq.context import JobContext

log = logging.getLogger("pgtaskq.django")


def django_job_middleware(job: JobContext, call_next: Callable[[], Any]) -> Any:
    """What Django does around a request, done around a job.

    Slot threads live for hours: without ``close_old_connections()`` a connection broken
    by a database restart, or older than ``CONN_MAX_AGE``, would be reused by the next job
    forever. ``reset_queries()`` keeps ``DEBUG = True`` from logging every query of every
    job in memory.
    """
    from django.db import close_old_connections, reset_queries

    reset_queries()
    close_old_connections()
    try:
        return call_next()
    finally:
        close_old_connections()


def autodiscover(submodules: Any = None, extra_modules: Any = None) -> list[str]:
    """Import ``<app>.<submodule>`` for every installed app, then ``extra_modules``.

    Returns the names imported. A missing ``tasks`` module is fine; an import error
    inside one is not hidden.
    """
    from django.apps import apps

    from pgtaskq.contrib.django.conf import get_settings

    config = get_settings()
    submodules = config["AUTODISCOVER"] if submodules is None else submodules
    extra_modules = config["TASK_MODULES"] if extra_modules is None else extra_modules
    if isinstance(submodules, str):
        submodules = [submodules]
    imported = []
    for app_config in apps.get_app_configs():
        for submodule in submodules:
            name = f"{app_config.name}.{submodule}"
            try:
                spec = importlib.util.find_spec(name)
            except ModuleNotFoundError:  # the app is a plain module, not a package
                spec = None
            if spec is not None:
                importlib.import_module(name)
                imported.append(name)
    for name in extra_modules:
        importlib.import_module(name)
        imported.append(name)
    return imported


def prepare_worker_queue() -> Any:
    """Set Django up and return the project's queue, ready for a worker (idempotent)."""
    import django
    from django.apps import apps

    if not apps.ready:
        django.setup()
    from pgtaskq.contrib.django.conf import get_queue

    queue = get_queue()
    modules = autodiscover()
    log.info("django: imported %s; %d tasks: %s", ", ".join(modules) or "no task modules",
             len(queue.tasks), ", ".join(sorted(queue.tasks)))
    if django_job_middleware not in queue.job_middlewares:
        queue.add_job_middleware(django_job_middleware)
    return queue


def __getattr__(name: str) -> Any:
    if name == "tq":
        return prepare_worker_queue()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
