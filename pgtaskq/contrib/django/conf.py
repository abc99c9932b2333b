"""``settings.PGTASKQ`` and the project's one ``DjangoTaskQueue``.

There is exactly one queue object per process, created on first use, so tasks registered
with ``@get_queue().task`` at import time are never lost. When the settings change (tests
use ``override_settings``) the same object is reconfigured in place rather than replaced,
for the same reason.

Settings (all optional)::

    PGTASKQ = {
        "DATABASE": "default",   # alias enqueue writes on (None: pgtaskq's own pool)
        "DSN": None,             # pool/worker DSN; None: built from DATABASES[DATABASE]
        "SCHEMA": None,          # None: $PGTASKQ_SCHEMA, else "pgtaskq"
        "DEFAULT_QUEUE": "default",
        "MAX_ATTEMPTS": 20,
        "POOL_MAX_SIZE": 10,
        "AUTODISCOVER": ["tasks"],   # submodules of INSTALLED_APPS the worker imports
        "TASK_MODULES": [],          # further modules the worker imports
        "DASHBOARD_AUTH": None,      # dotted path to check(request) -> bool; None: staff
        "DASHBOARD_READ_ONLY": False,  # the web dashboard without actions
    }
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from psycopg.conninfo import make_conninfo

from pgtaskq import dbapi, defaults, embedded
from pgtaskq.errors import ConfigurationError
from pgtaskq.job import Job
from pgtaskq.queue import DEFAULT_CONNECTION, TaskQueue
from pgtaskq.sql import jobs as job_sql
from pgtaskq.sql import render

DEFAULTS: dict[str, Any] = {
    "DATABASE": "default",
    "DSN": None,
    "SCHEMA": None,
    "DEFAULT_QUEUE": defaults.QUEUE,
    "MAX_ATTEMPTS": defaults.MAX_ATTEMPTS,
    "POOL_MAX_SIZE": defaults.POOL_MAX_SIZE,
    "AUTODISCOVER": ("tasks",),
    "TASK_MODULES": (),
    "DASHBOARD_AUTH": None,
    "DASHBOARD_READ_ONLY": False,
}

# Keys of DATABASES[...]["OPTIONS"] that Django consumes itself; the rest are libpq's.
_DJANGO_ONLY_OPTIONS = {
    "isolation_level", "server_side_binding", "assume_role", "pool", "cursor_factory",
    "context",
}


def get_settings() -> dict[str, Any]:
    """``settings.PGTASKQ`` merged over the defaults; unknown keys are an error."""
    configured = getattr(settings, "PGTASKQ", None) or {}
    if not isinstance(configured, Mapping):
        raise ConfigurationError("settings.PGTASKQ must be a dict")
    unknown = sorted(set(configured) - set(DEFAULTS))
    if unknown:
        raise ConfigurationError(
            f"unknown PGTASKQ setting(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}"
        )
    return {**DEFAULTS, **configured}


def database_dsn(alias: str) -> str:
    """A libpq connection string for Django's database ``alias`` (PostgreSQL only).

    Read at every call, because Django's test runner renames the database (``test_...``)
    after settings are loaded, and the worker must follow it.
    """
    from django.db import connections

    if alias not in settings.DATABASES:
        raise ConfigurationError(f"PGTASKQ['DATABASE'] = {alias!r} is not in DATABASES")
    wrapper = connections[alias]
    if wrapper.vendor != "postgresql":
        raise ConfigurationError(
            f"database {alias!r} is {wrapper.vendor}, not PostgreSQL: set PGTASKQ['DSN'] "
            "and PGTASKQ['DATABASE'] = None to keep jobs in a separate PostgreSQL"
        )
    params = wrapper.settings_dict
    options = {
        key: value
        for key, value in (params.get("OPTIONS") or {}).items()
        if key not in _DJANGO_ONLY_OPTIONS and isinstance(value, (str, int))
    }
    parts = {
        "dbname": params.get("NAME") or None,
        "user": params.get("USER") or None,
        "password": params.get("PASSWORD") or None,
        "host": params.get("HOST") or None,
        "port": str(params["PORT"]) if params.get("PORT") else None,
    }
    return make_conninfo(**{k: v for k, v in {**options, **parts}.items() if v is not None})


class DjangoTaskQueue(TaskQueue):
    """A TaskQueue configured from ``settings.PGTASKQ`` that enqueues on Django's connection.

    ``enqueue`` and ``enqueue_many`` without ``conn=`` run on
    ``django.db.connections[DATABASE]``: inside ``transaction.atomic()`` the job is part of
    the transaction; outside one, Django's autocommit commits it at once. Everything else
    (inspection, cancel, the worker) uses pgtaskq's own pool on the same database.
    """

    def __init__(self) -> None:
        self._configure()

    def _configure(self) -> None:
        config = get_settings()
        self.database: str | None = config["DATABASE"]
        self._explicit_dsn: str | None = config["DSN"]
        self.settings = config
        TaskQueue.__init__(
            self,
            dsn=self._explicit_dsn,
            schema=config["SCHEMA"],
            pool_max_size=config["POOL_MAX_SIZE"],
            default_queue=config["DEFAULT_QUEUE"],
            default_max_attempts=config["MAX_ATTEMPTS"],
        )

    def reload_settings(self) -> None:
        """Re-read the settings, keeping registered tasks and middlewares."""
        tasks, middlewares = self.tasks, self.job_middlewares
        self.close()
        try:
            self._configure()
        finally:
            self.tasks, self.job_middlewares = tasks, middlewares

    def admin_command(self, command: str) -> str:
        """Under Django, ``migrate`` installs and upgrades the schema (one migration per
        schema version); ``manage.py pgtaskq upgrade`` does the same by hand."""
        if command in ("install", "upgrade"):
            return f"python manage.py migrate' (or 'python manage.py pgtaskq {command}"
        return f"python manage.py pgtaskq {command}"

    def reconfigure(self, *, dsn: str | None = None, schema: str | None = None) -> None:
        """``pgtaskq --dsn ... worker``: an explicit DSN wins over the settings."""
        super().reconfigure(dsn=dsn, schema=schema)
        if dsn is not None:
            self._explicit_dsn = dsn

    @property
    def dsn(self) -> str:
        if self._explicit_dsn:
            return self._explicit_dsn
        if self.database is not None:
            return database_dsn(self.database)
        env = os.environ.get("PGTASKQ_DSN")
        if env:
            return env
        raise ConfigurationError(
            "no database for pgtaskq: set PGTASKQ['DSN'] or PGTASKQ['DATABASE']"
        )

    @property
    def conninfo(self) -> str:
        dsn = self.dsn
        if not embedded.is_embedded(dsn):
            return dsn
        # Starting (or joining) the embedded server is slow: once per DSN.
        cached = getattr(self, "_embedded_conninfo", None)
        if cached is None or cached[0] != dsn:
            cached = self._embedded_conninfo = (dsn, embedded.resolve(dsn))
        return cached[1]

    def connection_for_enqueue(self, conn: Any = DEFAULT_CONNECTION) -> Any:
        """Django's connection for an enqueue without ``conn=`` (None: our own pool)."""
        if conn is not DEFAULT_CONNECTION:
            return conn
        if self.database is None:
            return None
        from django.db import connections

        return connections[self.database]

    def read_job(self, job_id: int) -> Job | None:
        """``get_job`` on Django's connection: sees jobs of the current transaction too.

        django.tasks' ``get_result()`` uses it, so a view (or a ``TestCase``, whose test
        runs in one transaction) can read a result it has just enqueued.
        """
        conn = self.connection_for_enqueue()
        if conn is None:
            return self.get_job(job_id)
        rows = dbapi.execute(conn, _read_job_query(self.schema), {"id": int(job_id)})
        if not rows:
            return None
        # JSON is sent as text (Django's drivers do not decode jsonb); Job.from_row
        # decodes it field by field, marking what Python's json refuses
        return Job.from_row(tuple(rows[0]))


_JOB_FIELDS = [field.name for field in dataclasses.fields(Job) if field.name != "undecodable"]
_JSON_FIELDS = ("args", "kwargs", "result")


@functools.lru_cache(maxsize=64)
def _read_job_query(schema: str) -> str:
    columns = ", ".join(f"{name}::text" if name in _JSON_FIELDS else name
                        for name in _JOB_FIELDS)
    return f"SELECT {columns} FROM ({render(schema, job_sql.GET)}) AS job"


_queue: DjangoTaskQueue | None = None
_lock = threading.Lock()


_stale = False


def get_queue() -> DjangoTaskQueue:
    """The project's TaskQueue (created on first call, after Django is configured)."""
    global _queue, _stale
    if _queue is None or _stale:
        with _lock:
            if _queue is None:
                _queue = DjangoTaskQueue()
            elif _stale:
                _queue.reload_settings()
            _stale = False
    return _queue


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    global _stale
    if _queue is not None and setting in ("PGTASKQ", "DATABASES"):
        try:
            _queue.reload_settings()
        except ConfigurationError:
            # Raised where the queue is next asked for (get_queue), not inside
            # override_settings(), which would then fail to restore the settings.
            _stale = True


setting_changed.connect(_settings_changed, dispatch_uid="pgtaskq.contrib.django.conf")
