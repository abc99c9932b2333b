"""A TaskQueue's connections: its DSN, its own lazily opened pool, and how a statement
runs on it (or on the caller's connection) with readable errors.

The pool is opened on first use and anew in a forked child (gunicorn ``--preload``); an
unreachable server is ``DatabaseUnavailableError`` within ``pool_timeout``, a missing
schema ``SchemaNotInstalledError`` saying what to run; named prepared statements are used
until a pooler in transaction mode loses one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from pgtaskq import dbapi, defaults, embedded, migrate
from pgtaskq.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    SchemaNotInstalledError,
    first_line,
)
from pgtaskq.pool import LivenessCheck, open_pool
from pgtaskq.prepared import PreparedStatement, PreparedStatementLost
from pgtaskq.sql import render

log = logging.getLogger("pgtaskq")

_PREPARED_STATEMENT_LOST = ("26000", "42P05")
"""SQLSTATEs of a named statement missing on this server session, or already there: what a
pooler in transaction mode (PgBouncer < 1.21) does to prepared statements."""


class QueueConnections:
    """The connection side of ``TaskQueue`` (which sets these attributes up)."""

    schema: str
    prepare: bool
    pool_timeout: float
    _dsn: str | None
    _conninfo: str | None
    _connect_kwargs: dict[str, Any]
    _pool: ConnectionPool | None
    _pool_pid: int
    _pool_lock: threading.Lock
    _pool_min_size: int
    _pool_max_size: int
    _inherited_pools: list[ConnectionPool]
    _liveness: LivenessCheck
    _prepared: dict[str, PreparedStatement]

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

    def _behind_pooler(self) -> None:
        """The pool's connections go through a pooler (PgBouncer): stop preparing."""
        if self.prepare:
            self.prepare = False
            log.info("connected through a pooler (PgBouncer): pgtaskq does not prepare "
                     "statements in this process")

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
                        on_pooler=self._behind_pooler,
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
                    return self._run_on(own, query, params)
                finally:
                    pool.putconn(own)

    def _run_on(self, own: psycopg.Connection, query: str, params: Mapping[str, Any]) -> list:
        """``query`` on a borrowed pooled connection (``_run``)."""
        try:
            cursor = own.execute(query, params, prepare=None if self.prepare else False)
        except psycopg.Error as exc:
            if not _prepared_statement_lost(exc):
                raise
            # The statement failed at Parse or Bind, before it ran: safe to run again,
            # unprepared.
            self._turn_prepare_off(exc)
            cursor = own.execute(query, params, prepare=False)
        result = cursor.pgresult
        if result is None or result.status != psycopg.pq.ExecStatus.TUPLES_OK:
            return []
        return cursor.fetchall()

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
                if own.prepare_threshold is None:  # made through a pooler (pgtaskq.pool)
                    self._behind_pooler()
                    return self._run_on(own, query, params)
                return statement.run(own, params)
            except PreparedStatementLost as exc:
                self._turn_prepare_off(exc)
            finally:
                pool.putconn(own)
        return self._run(query_template, params)

    def admin_command(self, command: str) -> str:
        """The command line that runs ``pgtaskq COMMAND`` (install, upgrade) for this
        queue, as error messages suggest it; integrations word it their way."""
        return migrate.admin_command(self.schema, command)


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


def _prepared_statement_lost(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) in _PREPARED_STATEMENT_LOST


def _connection_lost(exc: psycopg.OperationalError) -> bool:
    """A broken connection (no SQLSTATE: the socket died) or the server going away."""
    code = exc.sqlstate
    return code is None or code.startswith("08") or code in ("57P01", "57P02", "57P03")


def _connect_timeout(pool_timeout: float) -> int:
    """libpq's connect_timeout (whole seconds, at least 2: libpq treats 1 as 2 anyway)."""
    return max(2, int(pool_timeout + 0.999))
