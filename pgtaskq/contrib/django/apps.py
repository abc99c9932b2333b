"""The Django app: ``INSTALLED_APPS = [..., "pgtaskq.contrib.django"]``.

Installing the app gives ``manage.py pgtaskq``, the migration that installs pgtaskq's
schema on ``migrate``, and a system check of ``settings.PGTASKQ``. The queue itself reads
the settings on first use, not at startup, so a web process that never enqueues never
touches the job tables.
"""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``manage.py check`` reports a bad ``PGTASKQ`` before a worker or a view trips on it."""
    from pgtaskq.contrib.django.conf import database_dsn, get_settings
    from pgtaskq.errors import ConfigurationError
    from pgtaskq.sql import validate_schema_name

    try:
        config = get_settings()
        if config["SCHEMA"] is not None:
            validate_schema_name(config["SCHEMA"])
        if config["DATABASE"] is not None and not config["DSN"]:
            database_dsn(config["DATABASE"])
    except ConfigurationError as exc:
        return [checks.Error(str(exc), obj="settings.PGTASKQ", id="pgtaskq.E001")]
    return []


def close_pool_before_database_admin(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Close pgtaskq's pool when Django opens a connection to administer databases.

    Django opens such a connection (alias ``__no_db__``) to create and to drop its test
    database, and nothing else tells an app the test database is about to go away. A test
    that used ``get_job``, ``list_jobs``, ``cancel`` or ``retry`` left pgtaskq's pool
    connected to it, so ``DROP DATABASE`` failed ("being accessed by other users") and
    ``manage.py test`` exited 1 after every test passed. The pool reopens on next use.
    """
    from django.db.backends.base.base import NO_DB_ALIAS

    if getattr(connection, "alias", None) != NO_DB_ALIAS:
        return
    from pgtaskq.contrib.django import conf

    if conf._queue is not None:
        conf._queue.close()


class PgtaskqConfig(AppConfig):
    name = "pgtaskq.contrib.django"
    label = "pgtaskq"
    verbose_name = "pgtaskq"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        checks.register(check_settings, "pgtaskq")
        connection_created.connect(close_pool_before_database_admin,
                                   dispatch_uid="pgtaskq.close_pool_before_database_admin")
