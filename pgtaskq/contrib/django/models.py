"""Unmanaged models over pgtaskq's own tables, for the Django admin (``admin.py``).

pgtaskq owns its schema (versioned migrations, ``manage.py pgtaskq upgrade``); Django only
reads it: ``managed = False``, so ``migrate`` never creates, alters or drops these tables.
Their ``db_table`` is the schema-qualified name of the configured schema
(``PGTASKQ["SCHEMA"]``, else ``$PGTASKQ_SCHEMA``, else ``pgtaskq``) as read when Django
loads the app. Changes go through the queue's API (retry, cancel), never through the ORM:
every status change is one of pgtaskq's statements.
"""

from __future__ import annotations

import os

from django.db import models

from pgtaskq import defaults
from pgtaskq.errors import ConfigurationError
from pgtaskq.sql import validate_schema_name


def configured_schema() -> str:
    """The schema of pgtaskq's tables as the settings name it now."""
    from pgtaskq.contrib.django.conf import get_settings

    try:
        schema = get_settings()["SCHEMA"] or os.environ.get("PGTASKQ_SCHEMA")
        return validate_schema_name(schema or defaults.SCHEMA)
    except ConfigurationError:
        # a bad PGTASKQ must not break app loading: the system check reports it
        return defaults.SCHEMA


def table(name: str) -> str:
    """``"schema"."name"`` for the configured schema (Django keeps a quoted name as is)."""
    return f'"{configured_schema()}"."{name}"'


def schema_of(model: type[models.Model]) -> str:
    """The schema of ``model``'s table, as read when Django loaded the app."""
    return model._meta.db_table.split('"')[1]


class JobFields(models.Model):
    id = models.BigIntegerField(primary_key=True)
    task = models.TextField()
    queue = models.TextField()
    status = models.TextField()
    args = models.JSONField()
    kwargs = models.JSONField()
    priority = models.IntegerField()
    attempts = models.IntegerField()
    max_attempts = models.IntegerField()
    run_at = models.DateTimeField()
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True)
    last_error = models.TextField(null=True)
    worker_id = models.BigIntegerField(null=True)
    dedupe_key = models.TextField(null=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"job {self.id} ({self.task}, {self.status})"


class Job(JobFields):
    """A queued or running job (the ``jobs`` table)."""

    cancel_requested = models.BooleanField()

    class Meta:
        managed = False
        db_table = table("jobs")
        verbose_name = "live job"
        ordering = ("-id",)


class FinishedJob(JobFields):
    """A succeeded, failed or cancelled job (the ``job_history`` table)."""

    finished_at = models.DateTimeField()
    result = models.JSONField(null=True)

    class Meta:
        managed = False
        db_table = table("job_history")
        verbose_name = "finished job"
        ordering = ("-id",)
