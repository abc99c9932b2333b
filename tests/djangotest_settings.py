"""Django settings for the django.tasks tests: the pytest process and its worker subprocess.

The pytest process calls :func:`build` with the test DSN and ``settings.configure()``;
the worker subprocess (``DJANGO_SETTINGS_MODULE=djangotest_settings``) gets the same
settings from ``$PGTASKQ_DSN``, which ``WorkerProcess`` sets along with the test's schema.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

try:
    import django.tasks  # noqa: F401

    TASKS_APPS: list[str] = []
except ImportError:  # Django < 6: the backport
    TASKS_APPS = ["django_tasks"]


def build(dsn: str) -> dict[str, Any]:
    db = conninfo_to_dict(dsn)
    return {
        "DEBUG": False,
        "SECRET_KEY": "tests-only",
        "USE_TZ": True,
        "INSTALLED_APPS": [*TASKS_APPS, "pgtaskq.contrib.django"],
        "DATABASES": {
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": db.get("dbname", ""),
                "USER": db.get("user", ""),
                "PASSWORD": db.get("password", ""),
                "HOST": db.get("host", ""),
                "PORT": db.get("port", ""),
            }
        },
        "PGTASKQ": {"DATABASE": "default", "TASK_MODULES": ["djangotest_tasks"]},
        "TASKS": {
            "default": {
                "BACKEND": "pgtaskq.contrib.django.PgtaskqBackend",
                "QUEUES": [],
                "OPTIONS": {"MAX_ATTEMPTS": 3},
            }
        },
    }


if os.environ.get("DJANGO_SETTINGS_MODULE") == __name__:
    globals().update(build(os.environ["PGTASKQ_DSN"]))


@pytest.fixture(scope="session")
def django_configured(pgtaskq_dsn: str) -> None:
    """Configure Django once for the pytest process (settings can only be set once)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(**build(pgtaskq_dsn))
        django.setup()


@pytest.fixture
def django_tq(django_configured: None, tq: Any) -> Any:
    """The project's DjangoTaskQueue pointed at the test's schema for one test."""
    from django.db import connections
    from django.test import override_settings

    from pgtaskq.contrib.django import get_queue

    with override_settings(
        PGTASKQ={"DATABASE": "default", "SCHEMA": tq.schema, "POOL_MAX_SIZE": 2,
                 "TASK_MODULES": ["djangotest_tasks"]}
    ):
        queue = get_queue()
        try:
            yield queue
        finally:
            queue.close()
            connections.close_all()
