"""The Django app: ``INSTALLED_APPS = [..., "pgtaskq.contrib.django"]``.

Installing the app gives ``manage.py pgtaskq`` and the migration that installs pgtaskq's
schema on ``migrate``. It reads ``settings.PGTASKQ`` on first use, not at startup, so a
web process that never enqueues never touches the job tables.
"""

from __future__ import annotations

from django.apps import AppConfig


class PgtaskqConfig(AppConfig):
    name = "pgtaskq.contrib.django"
    label = "pgtaskq"
    verbose_name = "pgtaskq"
    default_auto_field = "django.db.models.BigAutoField"
