"""Install, upgrade and remove pgtaskq's tables: versioned migrations under an advisory lock.

The whole upgrade runs in one transaction holding a transaction-level advisory lock keyed
on the schema name, so any number of processes may run ``install`` at the same moment (say,
every replica of a web app at boot): the first applies the migrations, the others wait for
it and then find nothing left to do. PostgreSQL's transactional DDL means a failed
migration leaves the previous version intact.

The others wait as long as the migration runs, however long that is, but not for a client
that stopped talking while it held the lock: the transaction sets its own
``idle_in_transaction_session_timeout`` (``MIGRATION_IDLE_TIMEOUT``), so the server ends a
silent one and releases the lock for the next installer. Once it holds that lock, a
migration waits for the locks on pgtaskq's tables at most ``MIGRATION_LOCK_TIMEOUT`` per
try: behind a long transaction it gives way and tries again, instead of holding up every
enqueue and claim queued behind its DDL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from pgtaskq import defaults
from pgtaskq._version import __version__
from pgtaskq.backoff import Backoff
from pgtaskq.errors import PgtaskqError, SchemaNotInstalledError, SchemaVersionError
from pgtaskq.sql import migrations, render

MIGRATION_IDLE_TIMEOUT = 60.0
"""Seconds a migration's transaction may sit idle on the server, waiting for its client's
next statement, before PostgreSQL ends it. A client that froze while holding the install
lock (a stopped process, a stuck pooler, a network partition) would otherwise keep every
other installer waiting, and its locks on the tables blocking the queue, for ever; a live
client sends its next statement within milliseconds. Fixed rather than a setting: no
migration waits on its client for longer than that."""


MIGRATION_LOCK_TIMEOUT = 2.0
"""Seconds one try of a migration waits for a lock on pgtaskq's tables before it gives way.
DDL such as ``CREATE TRIGGER ... ON workers`` or ``ALTER TABLE jobs`` waits behind any
transaction that touched the table, and while it waits, PostgreSQL queues every later
enqueue, claim and heartbeat behind it: one long report query on ``jobs`` during
``pgtaskq upgrade`` would stall the whole queue for as long as it runs. So a try waits at
most this long, rolls back (the queue runs on meanwhile) and tries again."""

MIGRATION_LOCK_PATIENCE = 600.0
"""Seconds of such tries, retried with a growing pause, before ``upgrade`` or
``uninstall`` gives up with an error naming the cause."""

log = logging.getLogger("pgtaskq.migrate")

T = TypeVar("T")


def _take_install_lock(conn: psycopg.Connection, schema: str) -> None:
    """In the migration's transaction: bound its idle time, wait for the install lock
    (as long as the migration before it takes), then bound its waits for table locks."""
    conn.execute(render(schema, migrations.IDLE_TIMEOUT),
                 {"milliseconds": _milliseconds(MIGRATION_IDLE_TIMEOUT)})
    conn.execute(render(schema, migrations.INSTALL_LOCK), {"schema": schema})
    conn.execute(render(schema, migrations.LOCK_TIMEOUT),
                 {"milliseconds": _milliseconds(MIGRATION_LOCK_TIMEOUT)})


def _milliseconds(seconds: float) -> str:
    return str(max(1, round(seconds * 1000)))


def _giving_way(schema: str, what: str, attempt: Callable[[], T],
                patience: float | None = None) -> T:
    """``attempt()`` (one transaction), tried again after a pause whenever a lock it needs
    was not free within ``MIGRATION_LOCK_TIMEOUT``, for ``patience`` seconds
    (``MIGRATION_LOCK_PATIENCE`` by default)."""
    patience = MIGRATION_LOCK_PATIENCE if patience is None else patience
    deadline = time.monotonic() + patience
    backoff = Backoff(0.5, 10.0)
    while True:
        try:
            return attempt()
        except psycopg.errors.LockNotAvailable as exc:
            pause = backoff.failed()
            if time.monotonic() + pause > deadline:
                raise PgtaskqError(
                    f"could not {what} schema {schema!r}: a lock it needs on pgtaskq's "
                    f"tables stayed held by another transaction for "
                    f"{patience:.0f} s ({backoff.failures} tries of "
                    f"{MIGRATION_LOCK_TIMEOUT:g} s, the queue kept running in between); "
                    "find it with pg_locks and pg_stat_activity, end it and run the "
                    "command again") from exc
            log.warning("%s of schema %r: a lock on its tables is held by another "
                        "transaction; giving way and trying again in %.1f s", what, schema,
                        pause)
            time.sleep(pause)


def installed_version(conn: psycopg.Connection, schema: str) -> int:
    """Version of the schema in the database; 0 when pgtaskq is not installed there."""
    exists = conn.execute(
        render(schema, migrations.TABLE_EXISTS),
        {"qualified": f'"{schema}".schema_version'},
    ).fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute(render(schema, migrations.INSTALLED_VERSION)).fetchone()
    return int(row[0]) if row else 0


def upgrade(conn: psycopg.Connection, schema: str, target: int | None = None) -> tuple[int, int]:
    """Bring ``schema`` to version ``target`` (default: latest); return (before, after).

    Idempotent: running it on an up-to-date schema changes nothing. ``conn`` must not be
    in a transaction; the migration commits its own.
    """
    target = migrations.LATEST_VERSION if target is None else target
    if not 0 <= target <= migrations.LATEST_VERSION:
        raise ValueError(f"unknown schema version {target}")
    return _giving_way(schema, "upgrade", lambda: _upgrade_once(conn, schema, target))


def _upgrade_once(conn: psycopg.Connection, schema: str, target: int) -> tuple[int, int]:
    with conn.transaction():
        _take_install_lock(conn, schema)
        exists = conn.execute(render(schema, migrations.SCHEMA_EXISTS), {"schema": schema})
        created_schema = not exists.fetchone()[0]  # type: ignore[index]
        if created_schema:
            # Not "CREATE SCHEMA IF NOT EXISTS": that needs CREATE on the database even
            # when the schema exists, which a role owning only a pre-made schema lacks.
            conn.execute(render(schema, migrations.CREATE_SCHEMA))
        before = installed_version(conn, schema)
        if before == 0:
            # Only when there is no record: CREATE TABLE IF NOT EXISTS checks for CREATE on
            # the schema first, so an app role running "upgrade" at every boot on a
            # current schema would fail for lack of a privilege it does not need.
            conn.execute(render(schema, migrations.SCHEMA_VERSION_TABLE))
        if before > migrations.LATEST_VERSION:
            raise SchemaVersionError(
                f"schema {schema!r} is at version {before}, newer than this pgtaskq "
                f"({__version__}) knows ({migrations.LATEST_VERSION}); upgrade pgtaskq"
            )
        if before < target:
            _bring_record_up_to_date(conn, schema)
        for version in range(before, target):
            conn.execute(render(schema, migrations.MIGRATIONS[version]))
            conn.execute(
                render(schema, migrations.RECORD_VERSION),
                {"version": version + 1, "pgtaskq_version": __version__,
                 "created_schema": created_schema and version == before},
            )
    return before, max(before, target)


def _bring_record_up_to_date(conn: psycopg.Connection, schema: str) -> None:
    """Add ``created_schema`` to an install record written before it existed."""
    has_column = conn.execute(
        render(schema, migrations.SCHEMA_CREATED_BY_PGTASKQ), {"schema": schema}
    ).fetchone()
    if not (has_column and has_column[0]):
        conn.execute(render(schema, migrations.ADD_CREATED_SCHEMA_COLUMN))


def uninstall(conn: psycopg.Connection, schema: str, *,
              lock_patience: float | None = None) -> bool:
    """Drop what pgtaskq's install record says it created; return whether it was installed.

    Only the objects of the versions recorded in ``schema_version`` are dropped, by name,
    newest version first, and never ``DROP SCHEMA ... CASCADE``: a schema that also holds
    the user's tables keeps them, and a schema with no install record is not touched at
    all, even when it holds tables named ``jobs`` or ``workers``. The schema itself goes
    only when pgtaskq created it and nothing else lives in it. ``lock_patience``: how long
    to keep giving way to transactions that hold locks on its tables (default
    ``MIGRATION_LOCK_PATIENCE``).
    """
    return _giving_way(schema, "uninstall", lambda: _uninstall_once(conn, schema),
                       lock_patience)


def _uninstall_once(conn: psycopg.Connection, schema: str) -> bool:
    with conn.transaction():
        _take_install_lock(conn, schema)
        version = installed_version(conn, schema)
        if version == 0:
            return False
        if version > migrations.LATEST_VERSION:
            raise SchemaVersionError(
                f"schema {schema!r} is at version {version}, newer than this pgtaskq "
                f"({__version__}) knows ({migrations.LATEST_VERSION}): uninstall with that "
                "version of pgtaskq"
            )
        recorded = conn.execute(
            render(schema, migrations.SCHEMA_CREATED_BY_PGTASKQ), {"schema": schema}
        ).fetchone()
        created_schema = False
        if recorded and recorded[0]:
            row = conn.execute(render(schema, migrations.CREATED_SCHEMA)).fetchone()
            created_schema = bool(row and row[0])
        for step in reversed(migrations.UNINSTALLS[:version]):
            if step.strip():  # a version that created nothing has nothing to drop
                conn.execute(render(schema, step))
        conn.execute(render(schema, migrations.DROP_VERSION_TABLE))
        if created_schema:
            _drop_schema_if_empty(conn, schema)
    return True


def _drop_schema_if_empty(conn: psycopg.Connection, schema: str) -> None:
    empty = conn.execute(render(schema, migrations.SCHEMA_IS_EMPTY), {"schema": schema})
    row = empty.fetchone()
    if row and row[0]:
        try:
            with conn.transaction():  # a savepoint: a failed DROP keeps the rest
                conn.execute(render(schema, migrations.DROP_SCHEMA))
        except psycopg.errors.DependentObjectsStillExist:
            pass  # the user's types, operators... live there: the schema is theirs too


def admin_command(schema: str, command: str) -> str:
    """The ``pgtaskq`` command line to suggest for ``schema`` (``--schema`` when needed)."""
    if schema == defaults.SCHEMA:
        return f"pgtaskq {command}"
    return f"pgtaskq --schema {schema} {command}"


def require_installed(conn: psycopg.Connection, schema: str,
                      command: Callable[[str], str] | None = None) -> int:
    """Return the installed version, or raise the error that tells the user what to run.

    ``command("upgrade")`` words the command to suggest; integrations pass their own
    (``manage.py migrate``, ``flask pgtaskq upgrade``), the default is ``pgtaskq ...``.
    """
    if command is None:
        def command(name: str) -> str:
            return admin_command(schema, name)
    version = installed_version(conn, schema)
    if version == 0:
        raise SchemaNotInstalledError(
            f"pgtaskq is not installed in schema {schema!r}: run '{command('install')}'"
        )
    if version > migrations.LATEST_VERSION:
        raise SchemaVersionError(
            f"schema {schema!r} is at version {version}, newer than this pgtaskq "
            f"({__version__}) knows ({migrations.LATEST_VERSION}); upgrade pgtaskq"
        )
    if version < migrations.LATEST_VERSION:
        raise SchemaVersionError(
            f"schema {schema!r} is at version {version}, this pgtaskq needs "
            f"{migrations.LATEST_VERSION}: run '{command('upgrade')}'"
        )
    return version
