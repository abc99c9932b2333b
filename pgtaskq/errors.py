"""The exceptions pgtaskq raises, under one base class.

Every class sets ``__module__`` to ``pgtaskq`` so tracebacks and ``repr`` show the public
path users import from, not the private module that defines it; each is exported there
(``pgtaskq.X``), which is also where pickle finds it.
"""

from __future__ import annotations

from pgtaskq.redact import redact


def first_line(exc: BaseException, dsn: str | None = None) -> str:
    """The first line of an exception's message, or its type name when it has none.

    libpq messages carry DETAIL/HINT lines; a log line or a CLI error wants only the first.
    Passwords are masked (``dsn``'s too, when given): libpq may quote a DSN it could not
    parse, and this line goes to logs and terminals.
    """
    text = str(exc).strip()
    return redact(text.splitlines()[0], dsn) if text else type(exc).__name__


class PgtaskqError(Exception):
    """Base class of every error pgtaskq raises on purpose."""


class ConfigurationError(PgtaskqError, ValueError):
    """A setting is missing or invalid (DSN, schema name, option names)."""


class SchemaNotInstalledError(PgtaskqError):
    """The pgtaskq tables are missing in the target schema: run ``pgtaskq install``."""


class SchemaVersionError(PgtaskqError):
    """The installed schema is newer than this version of pgtaskq understands."""


class JobNotFoundError(PgtaskqError, LookupError):
    """No job has the given id (``pgtaskq show ID``; the API's ``get_job`` returns None
    and ``cancel``/``retry`` return False instead)."""


class DatabaseUnavailableError(PgtaskqError):
    """The database could not be reached (bad DSN, server down, authentication failed)."""


class Retry(Exception):
    """Raised inside a task to run it again later; counts as an attempt.

    ``delay`` in seconds overrides the exponential backoff; ``None`` uses the backoff.
    """

    def __init__(self, delay: float | None = None, reason: str | None = None) -> None:
        if delay is not None and delay < 0:
            raise ConfigurationError(f"Retry delay must be >= 0 seconds, got {delay!r}")
        self.delay = delay
        self.reason = reason
        super().__init__(reason or (f"retry requested in {delay}s" if delay is not None
                                    else "retry requested"))

    def __reduce__(self) -> tuple[type[Retry], tuple[float | None, str | None]]:
        # pickle would call Retry(message): the delay must survive, not become the message
        return type(self), (self.delay, self.reason)


class FinalFailure(Exception):
    """The attempt failed in a way another attempt cannot fix: the job fails now, with
    attempts left or not.

    The Django integration raises it (from the original error) when a django.tasks task's
    return value cannot be stored: running the body again would repeat its side effects
    and fail the same way. The job's error is that of ``__cause__`` when there is one.
    """


class Cancelled(Exception):
    """Raised by ``JobContext.check_cancelled()`` once a cancel was requested for the job."""


class ProcessDied(Exception):
    """What failure hooks get for an attempt whose child process died (``--pool
    process``: a segfault, ``os._exit``, the OOM killer); the message says how."""


for _cls in (PgtaskqError, ConfigurationError, SchemaNotInstalledError, SchemaVersionError,
             JobNotFoundError, DatabaseUnavailableError, Retry, Cancelled, FinalFailure,
             ProcessDied):
    _cls.__module__ = "pgtaskq"
