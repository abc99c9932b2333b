"""Logging for worker processes: fit the application's logging, or set up a plain one.

Library code only calls ``logging.getLogger("pgtaskq...")``. The worker commands
(``pgtaskq worker``, ``manage.py pgtaskq worker``, ``flask pgtaskq worker``) call
:func:`configure` once the application is loaded, and it decides:

- the application configured logging (Django's ``LOGGING``, ``logging.basicConfig``, a
  handler on the root or a ``pgtaskq`` logger): leave every handler and level alone, so
  each line is printed once, by the application's handlers, at its levels; an explicit
  ``--log-level`` only sets the ``pgtaskq`` logger's level;
- nothing is configured: one stderr handler on the root logger (like ``basicConfig``), so
  the tasks' own log lines are printed too, at ``--log-level`` (INFO by default);
- ``--configure-logging`` forces the second case, replacing the root logger's handlers;
  ``--no-configure-logging`` never touches logging.

Every line pgtaskq's handler prints carries an ISO time, the level, the logger and the
process id (a worker run by hand or in a container has no journald to add them), or is one
JSON object per line (``--log-format json``) for log pipelines. Records emitted while a job
runs carry its ``job_id``, ``task``, ``queue`` and ``attempt`` through
:class:`JobContextFilter`, which applications can add to their own handlers too.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from pgtaskq.context import peek_current
from pgtaskq.errors import ConfigurationError
from pgtaskq.printable import printable

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s%(job_suffix)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
FORMATS = ("text", "json")
JOB_FIELDS = ("job_id", "task", "queue", "attempt")
"""Attributes :class:`JobContextFilter` sets on every record (None outside a job)."""


class JobContextFilter(logging.Filter):
    """Adds the running job's ``job_id``, ``task``, ``queue`` and ``attempt`` to records.

    Attach it to a handler (``"()": "pgtaskq.logs.JobContextFilter"`` in Django's
    ``LOGGING`` filters) and format with ``%(job_id)s``; outside a job the fields are None.
    Fields a record already has (pgtaskq's own per-job lines pass them as ``extra``) are
    kept. ``job_suffix`` is `` [job 12 app.send attempt 1/3]`` inside a job, else empty.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        job = peek_current()
        if not hasattr(record, "job_id"):
            if job is None:
                for name in JOB_FIELDS:
                    setattr(record, name, None)
            else:
                record.job_id, record.task = job.id, job.task
                record.queue, record.attempt = job.queue, job.attempt
        job_id = getattr(record, "job_id", None)
        record.job_suffix = "" if job_id is None else (
            f" [job {job_id} {getattr(record, 'task', '')}"
            f" attempt {getattr(record, 'attempt', '')}]")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, pid, message, job fields, and the
    traceback as ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime(DATE_FORMAT, time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for name in (*JOB_FIELDS, "duration_ms", "outcome"):
            value = getattr(record, name, None)
            if value is not None:
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        return json.dumps(data, default=str)


class _TextFormatter(logging.Formatter):
    """One line per record; control characters escaped (``printable``): job errors and
    names come from whoever enqueued or wrote the task, and a raw escape sequence or
    newline in them could rewrite an operator's terminal or forge log lines."""

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "job_suffix"):
            record.job_suffix = ""
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return printable(super().formatException(ei), multiline=True)


def application_configured() -> bool:
    """True when someone already decided where log records go: a handler on the root
    logger, or on ``pgtaskq`` or one of its ancestors' chain up to root."""
    if logging.getLogger().handlers:
        return True
    logger: logging.Logger | None = logging.getLogger("pgtaskq")
    while logger is not None:
        if logger.handlers:
            return True
        logger = logger.parent if logger.propagate else None
    return False


def make_handler(fmt: str = "text") -> logging.Handler:
    """The stderr handler pgtaskq installs, with the job filter and the chosen format."""
    if fmt not in FORMATS:
        raise ConfigurationError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(JobContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json"
                         else _TextFormatter(TEXT_FORMAT, DATE_FORMAT))
    handler._pgtaskq = True  # type: ignore[attr-defined]
    return handler


def configure(level: str | None = None, fmt: str = "text",
              force: bool | None = None) -> bool:
    """Set up logging for a worker process; return whether pgtaskq installed a handler.

    ``force`` None: only when the application has not configured logging; True: replace
    the root logger's handlers; False: never. ``level`` None means INFO when pgtaskq sets
    logging up and "leave the application's levels alone" otherwise. Idempotent.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_pgtaskq", False)]
    install = force is True or (force is None and (ours or not application_configured()))
    if not install:
        if level is not None:
            logging.getLogger("pgtaskq").setLevel(level.upper())
        return False
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(make_handler(fmt))
    root.setLevel((level or "INFO").upper())
    # psycopg's pool logs each connection it discards at INFO and WARNING; only the
    # warnings matter to an operator.
    psycopg_logger = logging.getLogger("psycopg")
    if psycopg_logger.level == logging.NOTSET:
        psycopg_logger.setLevel(logging.WARNING)
    return True
