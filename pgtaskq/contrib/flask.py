"""pgtaskq for Flask: ``PgTaskQ(app)``, request-transactional enqueue, ``flask pgtaskq``.

``PgTaskQ`` is a TaskQueue configured from ``app.config`` (so ``@pgtq.task`` works at
import time, before any app exists, as with any Flask extension)::

    pgtq = PgTaskQ(connection=lambda: db.session.connection().connection.driver_connection)

    @pgtq.task
    def send_welcome(user_id): ...

    def create_app():
        app = Flask(__name__)
        app.config["PGTASKQ_DSN"] = "postgresql://..."
        pgtq.init_app(app)
        return app

Config keys: ``PGTASKQ_DSN`` (default ``$PGTASKQ_DSN``, else Flask-SQLAlchemy's
``SQLALCHEMY_DATABASE_URI`` when it names a PostgreSQL database), ``PGTASKQ_SCHEMA`` (default
``$PGTASKQ_SCHEMA`` or ``pgtaskq``), ``PGTASKQ_DEFAULT_QUEUE``, ``PGTASKQ_MAX_ATTEMPTS``,
``PGTASKQ_POOL_MAX_SIZE``.

``connection`` returns the request's open DB-API connection (psycopg 3, psycopg2, or the
driver connection under a SQLAlchemy session). During a request, ``enqueue`` without
``conn=`` writes there, inside the request's transaction: the job exists if and only if
the view's writes commit. Outside a request (shell, CLI, inside jobs) it uses pgtaskq's
own pool and commits at once, as an explicit ``conn=`` would be needed to join anything.

``flask pgtaskq worker|stats|install|jobs|...`` is pgtaskq's command line with the app's
configuration; the worker runs every job inside an application context of the app.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import click
from flask import Flask, current_app, g, has_request_context, request
from flask.cli import with_appcontext

from pgtaskq import defaults
from pgtaskq.context import JobContext
from pgtaskq.queue import DEFAULT_CONNECTION, TaskQueue
from pgtaskq.sql import jobs as job_sql

log = logging.getLogger("pgtaskq.flask")

EXTENSION_KEY = "pgtaskq"
_REQUEST_JOBS = "_pgtaskq_request_jobs"
_IN_TRANSACTION = (2, 3)
"""libpq's PQTRANS_INTRANS and PQTRANS_INERROR, as psycopg and psycopg2 both report them."""

ConnectionGetter = Callable[[], Any]


def sqlalchemy_connection(session: Any) -> ConnectionGetter:
    """A ``connection`` getter for a SQLAlchemy (scoped) session.

    ``session.connection()`` joins (or begins) the session's transaction on its engine
    connection; ``.connection.driver_connection`` is the psycopg/psycopg2 connection under
    it, which is what pgtaskq writes on. The job then commits with ``session.commit()``.
    """

    def get_connection() -> Any:
        return session.connection().connection.driver_connection

    return get_connection


class PgTaskQ(TaskQueue):
    """A Flask extension that is the app's TaskQueue."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        connection: ConnectionGetter | None = None,
    ) -> None:
        TaskQueue.__init__(self)
        self.app: Flask | None = None
        self.connection_getter = connection
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Configure from ``app.config``; register ``flask pgtaskq``.

        The queue keeps its tasks when initialised again (app factories in tests); the
        last app is the one the worker runs jobs in.
        """
        config = app.config
        tasks, middlewares = self.tasks, self.job_middlewares
        self.close()
        TaskQueue.__init__(
            self,
            dsn=config.get("PGTASKQ_DSN") or _dsn_of_sqlalchemy(config),
            schema=config.get("PGTASKQ_SCHEMA"),
            default_queue=config.get("PGTASKQ_DEFAULT_QUEUE", defaults.QUEUE),
            default_max_attempts=config.get("PGTASKQ_MAX_ATTEMPTS", defaults.MAX_ATTEMPTS),
            pool_max_size=config.get("PGTASKQ_POOL_MAX_SIZE", defaults.POOL_MAX_SIZE),
        )
        self.tasks, self.job_middlewares = tasks, middlewares
        self.app = app
        if self._in_app_context not in self.job_middlewares:
            self.job_middlewares.insert(0, self._in_app_context)
        app.extensions[EXTENSION_KEY] = self
        app.cli.add_command(pgtaskq_command)
        if self._warn_if_uncommitted not in app.teardown_request_funcs.get(None, []):
            app.teardown_request(self._warn_if_uncommitted)

    def admin_command(self, command: str) -> str:
        return f"flask pgtaskq {command}"

    def _in_app_context(self, job: JobContext, call_next: Callable[[], Any]) -> Any:
        """Run each job in an application context, as a view runs in a request's."""
        if self.app is None:
            return call_next()
        with self.app.app_context():
            return call_next()

    # -- enqueue on the request's connection -------------------------------------------

    def request_connection(self, getter: ConnectionGetter) -> ConnectionGetter:
        """Decorator form of ``PgTaskQ(connection=...)``."""
        self.connection_getter = getter
        return getter

    def connection_for_enqueue(self, conn: Any = DEFAULT_CONNECTION) -> Any:
        """``conn`` if given (``None``: our pool), else the request's connection, else
        None (outside a request, or without a ``connection`` getter)."""
        if conn is not DEFAULT_CONNECTION:
            return conn
        if self.connection_getter is None or not has_request_context():
            return None
        return self.connection_getter()

    def enqueue(self, task_name: str, args: Any = None, kwargs: Any = None, *,
                conn: Any = DEFAULT_CONNECTION, **options: Any) -> int:
        target = self.connection_for_enqueue(conn)
        job_id = super().enqueue(task_name, args, kwargs, conn=target, **options)
        self._note_request_jobs(conn, target, [job_id])
        return job_id

    def enqueue_many(self, task_name: str, jobs: Any, *,
                     conn: Any = DEFAULT_CONNECTION) -> list[int]:
        target = self.connection_for_enqueue(conn)
        ids = super().enqueue_many(task_name, jobs, conn=target)
        self._note_request_jobs(conn, target, ids)
        return ids

    def _note_request_jobs(self, conn: Any, target: Any, ids: list[int]) -> None:
        """Remember jobs written in the request's transaction, for the teardown check."""
        if conn is DEFAULT_CONNECTION and target is not None and ids:
            g.setdefault(_REQUEST_JOBS, []).append((target, ids))

    def _warn_if_uncommitted(self, exc: BaseException | None) -> None:
        """At the end of a request, warn about jobs its open transaction will roll back.

        A view that enqueues on the request's connection and returns without committing
        (and without an error) gets a job id for a job that the session's teardown rolls
        back: it never existed. Only requests whose connection is still in a transaction
        cost a query, on pgtaskq's pool, to tell committed jobs from pending ones.
        """
        writes = g.pop(_REQUEST_JOBS, None)
        if not writes or exc is not None:
            return
        pending = [job_id for conn, ids in writes if _in_transaction(conn) for job_id in ids]
        if not pending:
            return
        try:
            committed = {row[0] for row in self._run(job_sql.COMMITTED_IDS, {"ids": pending})}
        except Exception as error:  # a warning must never break the response
            log.debug("could not check the request's jobs: %s", error)
            return
        lost = [job_id for job_id in pending if job_id not in committed]
        if lost:
            log.warning(
                "%s %s: the request ended without committing its transaction, so the "
                "job(s) it enqueued (%s) will be rolled back with it and never run. Commit "
                "(db.session.commit()) before returning, or enqueue outside the request's "
                "transaction with .using(conn=None)",
                request.method, request.path, ", ".join(str(i) for i in lost),
            )


def _dsn_of_sqlalchemy(config: Any) -> str | None:
    """The libpq DSN of Flask-SQLAlchemy's ``SQLALCHEMY_DATABASE_URI``, when it is a
    PostgreSQL URL and ``$PGTASKQ_DSN`` is not set: one database, one setting.

    ``postgresql+psycopg2://u@h/db`` names the driver, which libpq does not parse; the
    rest of the URL is libpq's own form.
    """
    if os.environ.get("PGTASKQ_DSN"):
        return None
    url = config.get("SQLALCHEMY_DATABASE_URI")
    if not isinstance(url, str):  # unset, or a sqlalchemy URL object: str() hides the password
        url = getattr(url, "render_as_string", lambda **kw: None)(hide_password=False)
    if not url:
        return None
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        return None
    return f"postgresql://{rest}"


def _in_transaction(conn: Any) -> bool:
    """Whether ``conn`` (psycopg 3 or psycopg2) is inside a transaction: a local check."""
    try:
        return int(conn.info.transaction_status) in _IN_TRANSACTION
    except Exception:  # closed, or a driver without .info: nothing to say
        return False


def get_queue(app: Flask | None = None) -> PgTaskQ:
    """The PgTaskQ of ``app`` (default: the current app), e.g. from a view."""
    target = app or current_app
    try:
        return target.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError("pgtaskq is not initialised on this app: call PgTaskQ(app)") from None


def __getattr__(name: str) -> Any:
    # ``current_queue`` is what ``flask pgtaskq worker`` hands pgtaskq's worker command as
    # its APP: the worker then runs with the app the flask CLI loaded.
    if name == "current_queue":
        return get_queue()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@click.command(
    "pgtaskq",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def pgtaskq_command(args: tuple[str, ...]) -> None:
    """pgtaskq's command line with this app's configuration ('flask pgtaskq --help')."""
    from pgtaskq.contrib.cli_bridge import run_cli

    code = run_cli(
        get_queue(),
        list(args) or ["--help"],
        worker_app="pgtaskq.contrib.flask:current_queue",
        prog_name="flask pgtaskq",
    )
    if code:
        raise SystemExit(code)
