"""``TaskQueue``: the task registry and the producer side (enqueue, inspect, cancel, retry).

Web processes import this and nothing else: enqueueing needs one statement on either the
caller's connection (``conn=``, inside the caller's transaction, never committed here) or
a connection of the queue's own small pool (autocommit, so the job is durable when the call
returns). The pool is opened lazily, so defining ``tq = TaskQueue()`` at import time costs
nothing and needs no database.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from pgtaskq import dbapi, defaults, embedded, migrate, options
from pgtaskq.context import JobContext
from pgtaskq.declared import DeclaredOptions
from pgtaskq.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    PgtaskqError,
    SchemaNotInstalledError,
    first_line,
)
from pgtaskq.hooks import ErrorHook, JobHooks, SuccessHook
from pgtaskq.job import Job
from pgtaskq.pool import LivenessCheck, open_pool
from pgtaskq.prepared import PreparedStatement, PreparedStatementLost
from pgtaskq.sql import channel_name, render, validate_schema_name
from pgtaskq.sql import dashboard as dashboard_sql
from pgtaskq.sql import jobs as job_sql
from pgtaskq.sql import queues as queue_sql
from pgtaskq.task import Task

if TYPE_CHECKING:
    from pgtaskq.cron import Schedule

log = logging.getLogger("pgtaskq")

_DEDUPE_RACE_RETRIES = 5
_PREPARED_STATEMENT_LOST = ("26000", "42P05")
"""SQLSTATEs of a named statement missing on this server session, or already there: what a
pooler in transaction mode (PgBouncer < 1.21) does to prepared statements."""

JobMiddleware = Callable[["JobContext", Callable[[], Any]], Any]


class _DefaultConnection:
    """The ``conn=`` of an enqueue that names none (see ``connection_for_enqueue``)."""

    def __repr__(self) -> str:
        return "<the queue's default connection>"


DEFAULT_CONNECTION: Any = _DefaultConnection()
"""``conn=`` left out. For a plain TaskQueue that is its own pool, as ``conn=None`` is; an
integration makes it the request's (or Django's) connection, so that an explicit
``conn=None`` remains the way to commit one job at once on pgtaskq's own pool."""


class TaskQueue:
    """Registry of tasks plus the API to enqueue and manage jobs in one pgtaskq schema."""

    def __init__(
        self,
        dsn: str | None = None,
        schema: str | None = None,
        *,
        pool_min_size: int = defaults.POOL_MIN_SIZE,
        pool_max_size: int = defaults.POOL_MAX_SIZE,
        pool_timeout: float = defaults.POOL_TIMEOUT,
        default_queue: str = defaults.QUEUE,
        default_max_attempts: int = defaults.MAX_ATTEMPTS,
        prepare: bool | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._dsn = dsn
        self.schema = validate_schema_name(
            (os.environ.get("PGTASKQ_SCHEMA") or defaults.SCHEMA) if schema is None else schema
        )
        self.channel = channel_name(self.schema)
        self.default_queue = options.check_queue(default_queue)
        self.default_max_attempts = options.check_max_attempts(default_max_attempts)
        self.tasks: dict[str, Task] = {}
        self.job_middlewares: list[JobMiddleware] = []
        self.job_hooks = JobHooks()
        self.schedules: dict[str, Schedule] = {}
        self._pool_min_size = _check_count("pool_min_size", pool_min_size, 0)
        self._pool_max_size = _check_count("pool_max_size", pool_max_size, 1)
        if self._pool_min_size > self._pool_max_size:
            raise ConfigurationError(
                f"pool_min_size ({pool_min_size}) is larger than pool_max_size "
                f"({pool_max_size})"
            )
        self.pool_timeout = _check_seconds("pool_timeout", pool_timeout)
        """Longest an enqueue (or any call on the queue's own pool) waits for a connection
        before raising ``DatabaseUnavailableError``."""
        self.prepare = prepare_setting(prepare)
        """Whether pgtaskq may use named prepared statements (off behind PgBouncer < 1.21
        in transaction mode: ``prepare=False`` or ``$PGTASKQ_PREPARE=0``)."""
        self._connect_kwargs = dict(connect_kwargs or {})
        self._pool: ConnectionPool | None = None
        self._pool_pid = os.getpid()
        self._pool_lock = threading.Lock()
        self._inherited_pools: list[ConnectionPool] = []
        self._liveness = LivenessCheck()
        self._prepared: dict[str, PreparedStatement] = {}
        self._conninfo: str | None = None
        self.declared_options = DeclaredOptions()
        """Options of tasks this process does not register, as their workers publish them."""

    def __repr__(self) -> str:
        return f"<TaskQueue schema={self.schema} tasks={len(self.tasks)}>"

    def reconfigure(self, *, dsn: str | None = None, schema: str | None = None,
                    prepare: bool | None = None) -> None:
        """Point an unopened queue elsewhere (``pgtaskq --dsn ... worker app:tq``)."""
        if self._pool is not None:
            raise PgtaskqError("reconfigure() must be called before the queue is used")
        if prepare is not None:
            self.prepare = prepare_setting(prepare)
        if dsn is not None:
            self._dsn = dsn
            self._conninfo = None
        if schema is not None:
            self.schema = validate_schema_name(schema)
            self.channel = channel_name(self.schema)

    # -- configuration and connections --------------------------------------------------

    @property
    def dsn(self) -> str:
        """The configured DSN (``$PGTASKQ_DSN`` when none was given)."""
        dsn = self._dsn or os.environ.get("PGTASKQ_DSN")
        if not dsn:
            raise ConfigurationError(
                "no database configured: pass TaskQueue(dsn=...) or set PGTASKQ_DSN"
            )
        return dsn

    @property
    def conninfo(self) -> str:
        """A libpq connection string (the embedded server is started on first use)."""
        if self._conninfo is None:
            self._conninfo = embedded.resolve(self.dsn)
        return self._conninfo

    def connect(self, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection:
        """A new connection of our own (not from the pool), with a readable error."""
        try:
            return psycopg.connect(self.conninfo, autocommit=autocommit,
                                   **{**self.connection_kwargs(), **kwargs})
        except psycopg.ProgrammingError as exc:
            # libpq could not parse the DSN itself (``missing "=" after ...``).
            raise ConfigurationError(f"invalid DSN: {first_line(exc, self.dsn)}") from None
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError(
                f"cannot connect to PostgreSQL: {first_line(exc, self.dsn)}"
            ) from None

    def connection_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for every ``psycopg.connect`` pgtaskq makes for this queue.

        ``connect_kwargs`` as given (``sslmode``, ``options``, a ``cursor_factory``...),
        with psycopg's automatic prepared statements turned off when ``prepare`` is off;
        ``overrides`` win (a worker's ``application_name``).
        """
        kwargs = dict(self._connect_kwargs)
        if not self.prepare:
            kwargs["prepare_threshold"] = None
        kwargs.update(overrides)
        return kwargs

    def _turn_prepare_off(self, exc: BaseException) -> None:
        """A pooler between us and PostgreSQL lost a prepared statement: stop preparing."""
        if self.prepare:
            self.prepare = False
            log.warning(
                "prepared statements failed (%s): a pooler in transaction mode is in the way; "
                "pgtaskq no longer prepares statements in this process (set "
                "PGTASKQ_PREPARE=0 or TaskQueue(prepare=False) to start that way)",
                first_line(exc))

    @property
    def pool(self) -> ConnectionPool:
        """The queue's own connection pool, opened on first use (and anew after a fork)."""
        if self._pool_pid != os.getpid():
            self._forget_inherited_pool()
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    # Connect once directly first: a bad DSN then fails at once with
                    # libpq's message instead of after the pool's timeout.
                    self.connect(connect_timeout=_connect_timeout(self.pool_timeout)).close()
                    # No round-trip check per borrow (it doubled the cost of an
                    # enqueue): see pgtaskq.pool for how dead connections are caught.
                    kwargs = self.connection_kwargs()
                    if "application_name" not in pg_conninfo.conninfo_to_dict(self.conninfo):
                        kwargs.setdefault("application_name",
                                          defaults.PRODUCER_APPLICATION_NAME)
                    kwargs.setdefault("connect_timeout",
                                      _connect_timeout(self.pool_timeout))
                    self._pool = open_pool(
                        self.conninfo,
                        min_size=self._pool_min_size,
                        max_size=self._pool_max_size,
                        name=f"pgtaskq-{self.schema}",
                        liveness=self._liveness,
                        timeout=self.pool_timeout,
                        **kwargs,
                    )
        return self._pool

    def _forget_inherited_pool(self) -> None:
        """In a forked child (gunicorn ``--preload``), never use the parent's pool.

        Its connections' sockets are shared with the parent: two processes talking on one
        PostgreSQL session corrupt it. The child opens a pool of its own. The inherited pool
        is kept referenced, never closed: closing would send a Terminate on the parent's
        sockets (psycopg already skips that when a connection is garbage collected in a
        child, but an explicit close would not).
        """
        if self._pool is not None:
            self._inherited_pools.append(self._pool)
        self._pool = None
        self._prepared = {}
        self._pool_lock = threading.Lock()  # the parent's may have been held at fork time
        self._pool_pid = os.getpid()

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """Borrow an autocommit connection from the pool; errors are made readable."""
        with self._readable_errors(), self._unavailable_errors(), \
                self.pool.connection(timeout=self.pool_timeout) as conn:
            yield conn

    def close(self) -> None:
        """Close the pool (it reopens on next use)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    @contextlib.contextmanager
    def _unavailable_errors(self) -> Iterator[None]:
        """On the queue's own pool: no connection within ``pool_timeout``, or a connection
        lost mid-statement, is ``DatabaseUnavailableError`` (never psycopg_pool's
        ``PoolTimeout`` after its default 30 s)."""
        try:
            yield
        except PoolTimeout as exc:
            raise DatabaseUnavailableError(
                f"no database connection within {self.pool_timeout:g}s (pool_timeout): "
                "is PostgreSQL up and reachable?"
            ) from exc
        except psycopg.OperationalError as exc:
            if not _connection_lost(exc):
                raise  # a statement timeout, a lock timeout...: not an outage
            raise DatabaseUnavailableError(
                f"lost the database connection: {first_line(exc)} (a job being enqueued "
                "may or may not have been committed)"
            ) from exc

    def _borrow(self) -> psycopg.Connection:
        return self.pool.getconn(timeout=self.pool_timeout)

    @contextlib.contextmanager
    def _readable_errors(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # from any driver: psycopg 3, psycopg2, Django
            if dbapi.sqlstate(exc) == dbapi.UNDEFINED_TABLE:
                raise SchemaNotInstalledError(
                    f"pgtaskq is not installed in schema {self.schema!r}: "
                    f"run '{self.admin_command('install')}'"
                ) from exc
            raise

    def _run(self, query_template: str, params: Mapping[str, Any], conn: Any = None) -> list:
        """Run one statement on ``conn``, or on a pooled connection (committed at once).

        The pooled path is the producer's hot path, so it borrows with ``getconn`` and
        ``putconn`` rather than through two more context managers: that and the
        cursor's result check are a measurable share of an enqueue's client CPU.
        """
        query = render(self.schema, query_template)
        with self._readable_errors():
            if conn is not None:
                return dbapi.execute(conn, query, params)
            with self._unavailable_errors():
                pool = self.pool
                own = self._borrow()
                try:
                    try:
                        cursor = own.execute(query, params, prepare=None if self.prepare
                                             else False)
                    except psycopg.Error as exc:
                        if not _prepared_statement_lost(exc):
                            raise
                        # The statement failed at Parse or Bind, before it ran: safe to
                        # run again, unprepared.
                        self._turn_prepare_off(exc)
                        cursor = own.execute(query, params, prepare=False)
                    result = cursor.pgresult
                    if result is None or result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                        return []
                    return cursor.fetchall()
                finally:
                    pool.putconn(own)

    def _run_prepared(self, query_template: str, params: Mapping[str, Any]) -> list:
        """``_run`` on a pooled connection through libpq directly (pgtaskq.prepared).

        Only for the single enqueue: the one statement whose client-side cost is a large
        share of its time. Values come back as text. With ``prepare`` off (a pooler in
        transaction mode), the same statement runs unprepared.
        """
        if not self.prepare:
            return self._run(query_template, params)
        query = render(self.schema, query_template)
        statement = self._prepared.get(query)
        if statement is None:
            statement = PreparedStatement(query)
            self._prepared[query] = statement
        with self._readable_errors(), self._unavailable_errors():
            pool = self.pool
            own = self._borrow()
            try:
                return statement.run(own, params)
            except PreparedStatementLost as exc:
                self._turn_prepare_off(exc)
            finally:
                pool.putconn(own)
        return self._run(query_template, params)

    # -- schema -------------------------------------------------------------------------

    def install(self) -> tuple[int, int]:
        """Create or upgrade the schema (idempotent); return (version before, after)."""
        return self.upgrade()

    def upgrade(self) -> tuple[int, int]:
        """Apply pending migrations under an advisory lock; return (before, after)."""
        with self.connect() as conn:
            return migrate.upgrade(conn, self.schema)

    def uninstall(self) -> bool:
        """Drop pgtaskq's tables (jobs included!); return whether it was installed."""
        with self.connect() as conn:
            return migrate.uninstall(conn, self.schema)

    def grant(
        self,
        *,
        producer: str | Sequence[str] = (),
        worker: str | Sequence[str] = (),
        reader: str | Sequence[str] = (),
        dry_run: bool = False,
    ) -> list[str]:
        """Grant each role what its kind needs (``pgtaskq.grants``); return the statements.

        Run as the schema's owner. ``dry_run`` only returns the statements.
        """
        from pgtaskq import grants

        roles = {kind: [names] if isinstance(names, str) else list(names)
                 for kind, names in (("producer", producer), ("worker", worker),
                                     ("reader", reader))}
        with self.connect() as conn:
            migrate.require_installed(conn, self.schema)
            return grants.grant(conn, self.schema, roles, dry_run=dry_run)

    def check_privileges(self, kind: str) -> None:
        """Raise ``PgtaskqError`` naming the first privilege of ``kind`` this role lacks."""
        from pgtaskq import grants

        with self.connect() as conn:
            grants.require_privileges(conn, self.schema, kind)

    def check_installed(self) -> int:
        """Installed version; ``SchemaNotInstalledError`` saying what to run otherwise."""
        with self.connect() as conn:
            return migrate.require_installed(conn, self.schema, self.admin_command)

    def admin_command(self, command: str) -> str:
        """The command line that runs ``pgtaskq COMMAND`` (install, upgrade) for this
        queue, as error messages suggest it; integrations word it their way."""
        return migrate.admin_command(self.schema, command)

    # -- tasks --------------------------------------------------------------------------

    def task(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = defaults.PRIORITY,
        max_attempts: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Register a function as a task: ``@tq.task`` or ``@tq.task(name=..., ...)``."""

        def register(function: Callable[..., Any]) -> Task:
            task = Task(
                self,
                function,
                name=default_task_name(function) if name is None else name,
                queue=self.default_queue if queue is None else queue,
                priority=priority,
                max_attempts=(self.default_max_attempts if max_attempts is None
                              else max_attempts),
                timeout=timeout,
            )
            existing = self.tasks.get(task.name)
            if existing is not None and existing.func is not function:
                raise ConfigurationError(f"two tasks are named {task.name!r}")
            self.tasks[task.name] = task
            return task

        if func is not None:
            return register(func)
        return register

    def periodic(
        self,
        cron: str,
        *,
        name: str | None = None,
        tz: str | tzinfo | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        misfire: str = "run_once",
    ) -> Callable[[Callable[..., Any]], Task]:
        """Run a task on a cron schedule: ``@tq.periodic("*/5 * * * *", name="cleanup")``.

        Every worker takes part and each tick enqueues exactly one job; ``tz`` is an IANA
        zone (UTC by default); ``misfire`` is ``"run_once"`` (after an outage, run the
        latest missed tick once) or ``"skip"``. Bad input raises ``ConfigurationError``
        here, at import time. See ``pgtaskq.cron`` and docs/cron.rst.
        """
        from pgtaskq import cron as cron_schedules

        return cron_schedules.periodic(
            self, cron, name=name, tz=tz, queue=queue, priority=priority,
            max_attempts=max_attempts, args=args, kwargs=kwargs, misfire=misfire,
        )

    def add_job_middleware(self, middleware: JobMiddleware) -> JobMiddleware:
        """Wrap every job the workers of this queue run: ``middleware(job, call_next)``.

        ``job`` is the JobContext, ``call_next()`` runs the rest of the chain and the task
        and returns its result; a middleware returns that result (or raises). It runs in
        the slot thread with ``current_job()`` set, so it can open a scope, a span or a
        transaction around the task. The first added is the outermost. Integrations use
        it (Django closes stale connections around each job). Usable as a decorator.
        """
        self.job_middlewares.append(middleware)
        return middleware

    def on_success(self, hook: SuccessHook) -> SuccessHook:
        """Call ``hook(job, result)`` after each successful attempt (``pgtaskq.hooks``)."""
        self.job_hooks.success.append(hook)
        return hook

    def on_retry(self, hook: ErrorHook) -> ErrorHook:
        """Call ``hook(job, error)`` after each failed attempt that will be retried."""
        self.job_hooks.retry.append(hook)
        return hook

    def on_failure(self, hook: ErrorHook) -> ErrorHook:
        """Call ``hook(job, error)`` when a job's last attempt failed."""
        self.job_hooks.failure.append(hook)
        return hook

    def connection_for_enqueue(self, conn: Any = DEFAULT_CONNECTION) -> Any:
        """The connection an enqueue with this ``conn=`` writes on; None means our own pool.

        Integrations override it to make the default (``DEFAULT_CONNECTION``) the current
        request's transaction (Django's ``connections[alias]``, a Flask request's
        connection), so every enqueue option passes through ``enqueue``/``enqueue_many``
        unchanged; an explicit ``conn=None`` always means pgtaskq's own pool.
        """
        return None if conn is DEFAULT_CONNECTION else conn

    # -- enqueue ------------------------------------------------------------------------

    def _task_defaults(self, task_name: str) -> tuple[str, int, int]:
        """(queue, priority, max_attempts) of a task: as registered here, else as the
        workers that run it declare it (``pgtaskq.declared``), else the queue's defaults.

        Both sources were validated when they were set, so they are not checked again.
        """
        options.check_task_name(task_name)
        task = self.tasks.get(task_name)
        if task is not None:
            return task.queue, task.priority, task.max_attempts
        declared = self.declared_options.get(self, task_name)
        if declared is not None:
            return declared
        return self.default_queue, defaults.PRIORITY, self.default_max_attempts

    def _job_params(
        self,
        task_name: str,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        queue: str | None,
        priority: int | None,
        run_at: datetime | None,
        delay: float | None,
        dedupe_key: str | None,
        max_attempts: int | None,
    ) -> dict[str, Any]:
        """Validated statement parameters of one job; defaults from the task if known."""
        task_queue, task_priority, task_max_attempts = self._task_defaults(task_name)
        args_json, kwargs_json = options.check_args(args, kwargs)
        if delay is None and run_at is None:
            delay_seconds = 0.0
        else:
            delay_seconds, run_at = options.check_schedule(delay, run_at)
        return {
            "task": task_name,
            "queue": task_queue if queue is None else options.check_queue(queue),
            "args": args_json,
            "kwargs": kwargs_json,
            "priority": (
                task_priority if priority is None else options.check_priority(priority)
            ),
            "run_at": run_at,
            "delay": delay_seconds,
            "max_attempts": (
                task_max_attempts
                if max_attempts is None
                else options.check_max_attempts(max_attempts)
            ),
            "dedupe_key": options.check_dedupe_key(dedupe_key),
        }

    def enqueue(
        self,
        task_name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | None = None,
        dedupe_key: str | None = None,
        max_attempts: int | None = None,
        conn: Any = DEFAULT_CONNECTION,
        schedule: str | None = None,
    ) -> int:
        """Enqueue one job of ``task_name``; return its id (an existing id on dedupe).

        With ``conn=`` the row and its NOTIFY are written in that connection's current
        transaction: nothing exists until the caller commits. A task name no worker knows
        is accepted: the job waits, queued, until a worker that has the task runs.
        """
        conn = self.connection_for_enqueue(conn)
        params = self._job_params(
            task_name, args, kwargs, queue, priority, run_at, delay, dedupe_key, max_attempts
        )
        params["channel"] = self.channel
        params["schedule"] = schedule
        if params["dedupe_key"] is None:
            if conn is None:
                return int(self._run_prepared(job_sql.ENQUEUE_ONE, params)[0][0])
            return int(self._run(job_sql.ENQUEUE_ONE, params, conn)[0][0])
        for _ in range(_DEDUPE_RACE_RETRIES):
            rows = self._run(job_sql.ENQUEUE_ONE_DEDUPE, params, conn)
            if rows:
                return int(rows[0][0])
            # The key's holder committed after our snapshot (invisible to the statement)
            # or finished meanwhile: look again with a fresh snapshot, or insert again.
            found = self._run(
                job_sql.FIND_BY_DEDUPE_KEYS, {"dedupe_keys": [params["dedupe_key"]]}, conn
            )
            if found:
                return int(found[0][1])
        raise PgtaskqError(f"could not enqueue with dedupe_key {params['dedupe_key']!r}")

    def enqueue_many(
        self, task_name: str, jobs: Sequence[Mapping[str, Any]], *,
        conn: Any = DEFAULT_CONNECTION,
    ) -> list[int]:
        """Enqueue many jobs of one task in one statement; ids come back in input order.

        Each item is a dict with any of: args, kwargs, queue, priority, delay, run_at,
        dedupe_key, max_attempts. Everything is validated and serialised before the
        statement is sent, so a bad item means no job at all.
        """
        if isinstance(jobs, (str, bytes, Mapping)) or not isinstance(jobs, Sequence):
            raise TypeError("enqueue_many() takes a list of dicts, one per job")
        queue, priority, max_attempts = self._task_defaults(task_name)
        columns = options.many_job_columns(jobs)
        if not jobs:
            return []
        conn = self.connection_for_enqueue(conn)
        params = {
            "channel": self.channel,
            "task": task_name,
            "queue": queue,
            "priority": priority,
            "max_attempts_default": max_attempts,
            **columns,
        }
        dedupe_keys = columns["dedupe_keys"]
        keys = sorted({key for key in dedupe_keys if key is not None}) if dedupe_keys else []
        if not keys:
            rows = self._run(job_sql.ENQUEUE_MANY, params, conn)
            ids = _id_array(rows[0][0])
            if len(ids) != len(jobs):  # pragma: no cover - guards the statement's shape
                raise PgtaskqError("enqueue_many: the statement did not insert every job")
            return ids
        params["keys"] = keys
        rows = self._run(job_sql.ENQUEUE_MANY_DEDUPE, params, conn)
        return self._ids_in_input_order(dedupe_keys, rows, conn)

    def _ids_in_input_order(
        self, dedupe_keys: list[str | None], rows: list[tuple], conn: Any
    ) -> list[int]:
        """Map the statement's rows back to input positions.

        New ids are assigned in input order (``INSERT ... SELECT ... ORDER BY ord``), so the
        created rows sorted by id line up with the input rows that were inserted: every row
        without a key, and the first row of each key that was not already taken.
        """
        created = sorted((int(r[0]), r[1]) for r in rows if r[2])
        by_key: dict[str, int] = {r[1]: int(r[0]) for r in rows if not r[2]}
        created_keys = {key for _, key in created if key is not None}
        ids: list[int] = []
        position = 0
        unresolved: list[int] = []
        for index, key in enumerate(dedupe_keys):
            if key is None or (key in created_keys and key not in by_key):
                job_id, created_key = created[position]
                position += 1
                if created_key != key:  # pragma: no cover - guards the ordering invariant
                    raise PgtaskqError("enqueue_many: ids did not come back in input order")
                if key is not None:
                    by_key[key] = job_id
                ids.append(job_id)
            elif key in by_key:
                ids.append(by_key[key])
            else:
                ids.append(-1)
                unresolved.append(index)
        if unresolved:
            keys = sorted({dedupe_keys[i] for i in unresolved})  # type: ignore[type-var]
            found = dict(self._run(job_sql.FIND_BY_DEDUPE_KEYS, {"dedupe_keys": keys}, conn))
            for index in unresolved:
                if dedupe_keys[index] not in found:
                    raise PgtaskqError(
                        f"enqueue_many: job with dedupe_key {dedupe_keys[index]!r} finished "
                        "while being enqueued; enqueue it again"
                    )
                ids[index] = int(found[dedupe_keys[index]])
        return ids

    # -- inspect and manage -------------------------------------------------------------

    def get_job(self, job_id: int) -> Job | None:
        """The job with this id, live or finished; ``None`` if there is none."""
        rows = self._run(job_sql.GET, {"id": int(job_id)})
        return Job.from_row(rows[0]) if rows else None

    def list_jobs(
        self,
        *,
        status: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Newest jobs first, filtered by status, task and queue."""
        from pgtaskq.job import FINAL_STATUSES, LIVE_STATUSES, STATUSES

        if status is not None and status not in STATUSES:
            raise ConfigurationError(
                f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        params = {"status": status, "task": task, "queue": queue, "limit": int(limit)}
        rows: list[tuple] = []
        if status is None or status in LIVE_STATUSES:
            rows += self._run(job_sql.LIST_LIVE, params)
        if status is None or status in FINAL_STATUSES:
            rows += self._run(job_sql.LIST_HISTORY, params)
        rows.sort(key=lambda row: row[0], reverse=True)
        return [Job.from_row(row) for row in rows[: int(limit)]]

    def cancel(self, job_id: int, *, conn: Any = None) -> bool:
        """Cancel a job: a queued one at once; a running one is asked to stop.

        Returns False when the job does not exist or has already finished.
        """
        rows = self._run(job_sql.CANCEL, {"id": int(job_id), "channel": self.channel}, conn)
        return bool(rows)

    def retry(self, job_id: int, *, conn: Any = None) -> bool:
        """Queue a failed or cancelled job again, with a fresh count of attempts."""
        try:
            rows = self._run(job_sql.RETRY, {"id": int(job_id), "channel": self.channel}, conn)
        except Exception as exc:  # from any driver: psycopg 3, psycopg2, Django
            if dbapi.sqlstate(exc) != dbapi.UNIQUE_VIOLATION:
                raise
            raise PgtaskqError(
                f"cannot retry job {job_id}: another job with its dedupe_key is queued or "
                "running"
            ) from exc
        return bool(rows)

    def run_now(self, job_id: int, *, conn: Any = None) -> bool:
        """Make a queued job that waits for its ``run_at`` runnable at once.

        Returns False when the job is not queued or is already due.
        """
        rows = self._run(dashboard_sql.RUN_NOW, {"id": int(job_id), "channel": self.channel},
                         conn)
        return bool(rows)

    def retry_failed(self, task: str, *, limit: int = 10_000, conn: Any = None) -> int:
        """Queue the failed jobs of ``task`` again (at most ``limit``); return how many.

        Of failed jobs sharing a dedupe key only the newest is queued, and none whose key
        a live job holds.
        """
        rows = self._run(dashboard_sql.RETRY_FAILED_OF_TASK,
                         {"task": options.check_task_name(task), "limit": int(limit),
                          "channel": self.channel}, conn)
        return int(rows[0][0]) if rows else 0

    # -- pause and resume queues --------------------------------------------------------

    def pause(self, queue: str, *, conn: Any = None) -> bool:
        """Stop every worker claiming jobs of ``queue`` (from each one's next claim on).

        Jobs already running finish; new jobs may still be enqueued and wait. Returns
        False when the queue was already paused. The queue need not exist yet.
        """
        rows = self._run(queue_sql.PAUSE, {"queue": options.check_queue(queue)}, conn)
        return bool(rows)

    def resume(self, queue: str, *, conn: Any = None) -> bool:
        """Let workers claim ``queue`` again (idle ones are woken at once).

        Returns False when the queue was not paused.
        """
        rows = self._run(queue_sql.RESUME, {"queue": options.check_queue(queue),
                                            "channel": self.channel}, conn)
        return bool(rows)

    def paused_queues(self) -> dict[str, datetime]:
        """The paused queues, by name, with the time each was paused."""
        return {queue: at for queue, at in self._run(queue_sql.LIST_PAUSED, {})}


def prepare_setting(prepare: bool | None) -> bool:
    """``prepare`` as given, else ``$PGTASKQ_PREPARE`` (``0``/``false``/``off``/``no``: off),
    else on."""
    if prepare is not None:
        if not isinstance(prepare, bool):
            raise ConfigurationError(f"prepare must be True or False, got {prepare!r}")
        return prepare
    value = os.environ.get("PGTASKQ_PREPARE", "").strip().lower()
    if value in ("", "1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise ConfigurationError(
        f"PGTASKQ_PREPARE must be 1 or 0 (true/false, on/off), got {value!r}")


def _check_count(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigurationError(f"{name} must be an int >= {least}, got {value!r}")
    return value


def _check_seconds(name: str, value: object) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 < value < float("inf")):
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _prepared_statement_lost(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) in _PREPARED_STATEMENT_LOST


def _connection_lost(exc: psycopg.OperationalError) -> bool:
    """A broken connection (no SQLSTATE: the socket died) or the server going away."""
    code = exc.sqlstate
    return code is None or code.startswith("08") or code in ("57P01", "57P02", "57P03")


def _connect_timeout(pool_timeout: float) -> int:
    """libpq's connect_timeout (whole seconds, at least 2: libpq treats 1 as 2 anyway)."""
    return max(2, int(pool_timeout + 0.999))


def default_task_name(function: Callable[..., Any]) -> str:
    """``module.qualname`` of ``function``, as a worker importing its module will see it.

    A module run with ``python -m package.module`` is ``__main__`` in that process but
    ``package.module`` in the worker that imports it; naming its tasks ``__main__.f`` would
    leave their jobs queued for ever, so the module's real name is used.
    """
    module = function.__module__
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
    return f"{module}.{function.__qualname__}"


def _id_array(value: Any) -> list[int]:
    """The ids of ``array_agg(id)`` as ints, whatever the driver made of the array."""
    if isinstance(value, str):  # a driver that does not parse bigint[] returns '{1,2}'
        return [int(part) for part in value.strip("{}").split(",")]
    return value if type(value) is list else [int(job_id) for job_id in value]
