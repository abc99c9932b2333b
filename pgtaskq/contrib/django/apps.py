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


class PgtaskqConfig(AppConfig):
    name = "pgtaskq.contrib.django"
    label = "pgtaskq"
    verbose_name = "pgtaskq"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        checks.register(check_settings, "pgtaskq")
