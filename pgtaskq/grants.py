"""Least-privilege grants: what a producer, a worker and a reader role each need, no more.

The schema's owner (the role that ran ``install``) keeps the DDL; other roles get only:

- **producer** (web processes): ``INSERT`` of exactly the columns an enqueue writes, never
  ``id`` (a planted id would later collide in ``job_history`` and stall every completer
  and the rescuer), and ``SELECT`` of the columns its ``RETURNING`` and the dedupe
  look-up read. NOTIFY needs no privilege.
- **worker**: reads and writes the tables leasing, heartbeats, outcomes, the rescuer,
  cron (including ``nextval`` of the jobs' id sequence) and pruning touch.
- **reader** (``stats``, ``jobs``, ``show``, ``check``, dashboards): ``SELECT`` only.

Every kind may also read ``schema_version``, which ``upgrade`` and start-up checks read.
Nothing here covers the wake gate (schema version 11): every role may read that sequence,
one bit saying whether a worker may be waiting, and only ``SECURITY DEFINER`` functions
of the schema's owner write it, so upgrading to it needs no new grant.
One table of privileges serves ``pgtaskq grant`` and the worker's start-up check, which
refuses to start with one line naming the first missing privilege.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql

from pgtaskq.errors import ConfigurationError, PgtaskqError

KINDS = ("producer", "worker", "reader")

ENQUEUE_COLUMNS = ("queue", "task", "args", "kwargs", "priority", "run_at", "max_attempts",
                   "dedupe_key", "schedule")
"""What ``ENQUEUE_*`` statements insert (``id`` and the worker's columns are not here)."""

PRODUCER_READS = ("id", "queue", "run_at", "dedupe_key")
"""Columns an enqueue reads back (``RETURNING``, ``ON CONFLICT`` and the dedupe look-up)."""

TABLES = ("jobs", "job_history", "workers", "schedules", "stats_minute", "paused_queues",
          "job_trace_context", "worker_tasks", "schema_version")

PRIVILEGES: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    # kind: [(privilege, object, columns (empty: the whole table)), ...]
    "producer": [
        ("USAGE", "SCHEMA", ()),
        ("SELECT", "schema_version", ()),
        ("INSERT", "jobs", ENQUEUE_COLUMNS),
        ("SELECT", "jobs", PRODUCER_READS),
        # pgtaskq.contrib.opentelemetry stores the trace context of each job it enqueues
        ("INSERT", "job_trace_context", ("job_id", "carrier")),
        ("SELECT", "job_trace_context", ("job_id",)),  # its ON CONFLICT (job_id)
        # enqueue by name of a task this process does not know: what its workers declare
        ("SELECT", "worker_tasks", ("worker_id", "task", "queue", "priority", "max_attempts")),
        ("SELECT", "workers", ("id", "stopped_at", "last_heartbeat_at")),
        # wake_wanted(): does a live worker of the queue wait for a wake-up (schema v9)
        ("SELECT", "workers", ("queues", "heartbeat_interval", "announces_waiting",
                               "waiting_since")),
    ],
    "worker": [
        ("USAGE", "SCHEMA", ()),
        ("SELECT", "schema_version", ()),
        *((privilege, "jobs", ()) for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE")),
        *((privilege, "job_history", ()) for privilege in ("SELECT", "INSERT", "DELETE")),
        *((privilege, "workers", ()) for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE")),
        *((privilege, "schedules", ()) for privilege in ("SELECT", "INSERT", "UPDATE")),
        *((privilege, "stats_minute", ())
          for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE")),
        ("SELECT", "paused_queues", ()),
        *((privilege, "job_trace_context", ()) for privilege in ("SELECT", "DELETE")),
        *((privilege, "worker_tasks", ()) for privilege in ("SELECT", "INSERT", "DELETE")),
        ("USAGE", "SEQUENCE jobs", ()),
        ("USAGE", "SEQUENCE workers", ()),
    ],
    "reader": [
        ("USAGE", "SCHEMA", ()),
        *(("SELECT", table, ()) for table in TABLES),
    ],
}
"""What each kind of role needs. ``SEQUENCE t`` is the identity sequence of table ``t``."""


def check_role_name(role: object) -> str:
    """A role name to quote as an identifier: a non-empty printable string, 63 bytes at most."""
    if not isinstance(role, str):
        raise TypeError(f"role must be a string, got {type(role).__name__}")
    if not role or len(role.encode("utf-8", "surrogatepass")) > 63 or not role.isprintable():
        raise ConfigurationError(f"invalid role name {role!r}: 1-63 bytes, printable")
    return role


def grant_statements(conn: psycopg.Connection, schema: str,
                     roles: dict[str, Iterable[str]]) -> list[sql.Composed]:
    """The GRANT statements giving each role of ``roles[kind]`` the privileges of ``kind``."""
    statements: list[sql.Composed] = []
    for kind, names in roles.items():
        if kind not in PRIVILEGES:
            raise ConfigurationError(f"unknown kind of role {kind!r}; one of {', '.join(KINDS)}")
        for role in names:
            role_ident = sql.Identifier(check_role_name(role))
            for privilege, target, columns in PRIVILEGES[kind]:
                statements.append(sql.SQL("GRANT {} ON {} TO {}").format(
                    _privilege(privilege, columns), _target(conn, schema, target), role_ident))
    return statements


def grant(conn: psycopg.Connection, schema: str, roles: dict[str, Iterable[str]], *,
          dry_run: bool = False) -> list[str]:
    """Run (or with ``dry_run`` only return) the grants, in one transaction; their text."""
    statements = grant_statements(conn, schema, roles)
    texts = [statement.as_string(conn) for statement in statements]
    if not dry_run:
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
    return texts


def missing_privilege(conn: psycopg.Connection, schema: str, kind: str) -> str | None:
    """The first privilege of ``kind`` the current role lacks, as text; None if none is."""
    for privilege, target, _columns in PRIVILEGES[kind]:
        if target == "SCHEMA":
            query = "SELECT has_schema_privilege(%(schema)s, %(privilege)s)"
            params = {"schema": schema, "privilege": privilege}
            what = f"{privilege} on schema {schema}"
        elif target.startswith("SEQUENCE "):
            table = target.split()[1]
            query = ("SELECT has_sequence_privilege(pg_get_serial_sequence(%(table)s, 'id'), "
                     "%(privilege)s)")
            params = {"table": _qualified(schema, table), "privilege": privilege}
            what = f"{privilege} on the id sequence of {schema}.{table}"
        else:
            query = "SELECT has_table_privilege(%(table)s, %(privilege)s)"
            params = {"table": _qualified(schema, target), "privilege": privilege}
            what = f"{privilege} on {schema}.{target}"
        row = conn.execute(query, params).fetchone()
        if not (row and row[0]):
            return what
    return None


def require_privileges(conn: psycopg.Connection, schema: str, kind: str) -> None:
    """Raise naming the first privilege of ``kind`` the current role lacks."""
    missing = missing_privilege(conn, schema, kind)
    if missing is not None:
        user = conn.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
        raise PgtaskqError(
            f"role {user} lacks {missing}: run 'pgtaskq --schema {schema} grant --{kind} "
            f"{user}' as the schema's owner"
        )


def _privilege(privilege: str, columns: tuple[str, ...]) -> sql.Composable:
    if not columns:
        return sql.SQL(privilege)
    return sql.SQL("{} ({})").format(sql.SQL(privilege),
                                     sql.SQL(", ").join(map(sql.Identifier, columns)))


def _target(conn: psycopg.Connection, schema: str, target: str) -> sql.Composable:
    if target == "SCHEMA":
        return sql.SQL("SCHEMA {}").format(sql.Identifier(schema))
    if target.startswith("SEQUENCE "):
        table = target.split()[1]
        row = conn.execute("SELECT pg_get_serial_sequence(%s, 'id')",
                           [_qualified(schema, table)]).fetchone()
        if not row or not row[0]:
            raise PgtaskqError(f"pgtaskq is not installed in schema {schema!r}")
        return sql.SQL("SEQUENCE {}").format(sql.SQL(row[0]))  # already quoted by PostgreSQL
    return sql.SQL("TABLE {}.{}").format(sql.Identifier(schema), sql.Identifier(target))


def _qualified(schema: str, table: str) -> str:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table)).as_string(None)
