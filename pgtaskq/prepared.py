"""The single-enqueue hot path: a named prepared statement run straight through libpq.

A pooled ``enqueue()`` is one INSERT, and on a quiet machine its client-side cost was
about a third of the whole call: psycopg's cursor machinery (query conversion, adapters,
result description) costs ~30 us of CPU per execute where ``PQexecPrepared`` with text
parameters costs a few. This module keeps that fast path small and safe:

- it is used only on the queue's own pooled psycopg 3 connections (``conn=`` callers go
  through :mod:`pgtaskq.dbapi`, whatever their driver);
- the statement is prepared once per connection, under a name psycopg never uses;
- libpq's blocking call releases the GIL, so other threads of a web server run meanwhile;
- "prepared statement does not exist" (someone ran ``DEALLOCATE ALL``) is answered by
  preparing again and executing once more, which is safe: the statement failed at bind,
  before it ran;
- a pooler in transaction mode (PgBouncer before 1.21) hands each statement to whichever
  server session is free, so a name prepared on one is missing on the next, or already
  there: that raises ``PreparedStatementLost``, always before the statement ran, and the
  caller runs it unprepared from then on;
- the name is derived from the statement's text, so two versions of pgtaskq sharing a
  pooled server session can never run each other's statement under one name;
- every other failure raises the same ``psycopg`` exception a cursor would have raised.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg
from psycopg import pq

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_UNDEFINED_PREPARED_STATEMENT = b"26000"
_DUPLICATE_PREPARED_STATEMENT = b"42P05"


class PreparedStatementLost(psycopg.OperationalError):
    """The server session does not keep our prepared statement (a transaction pooler is in
    between). Raised before the statement ran: running it again unprepared is safe."""


class PreparedStatement:
    """One ``%(name)s`` statement, converted to ``$n`` placeholders and run by name."""

    def __init__(self, query: str) -> None:
        self.name = f"pgtaskq_{hashlib.sha1(query.encode()).hexdigest()[:16]}".encode()
        self.params: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in self.params:
                self.params.append(match.group(1))
            return f"${self.params.index(match.group(1)) + 1}"

        self.query = _PLACEHOLDER.sub(number, query).encode()
        self._prepared_on: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()

    def run(self, conn: psycopg.Connection, params: Mapping[str, Any]) -> list[tuple]:
        """Execute on ``conn`` (idle, autocommit); return the rows as text values."""
        values = [_text(params[name]) for name in self.params]
        pgconn = conn.pgconn
        if conn not in self._prepared_on:
            self._prepare(conn)
        result = pgconn.exec_prepared(self.name, values)
        if _sqlstate(result) == _UNDEFINED_PREPARED_STATEMENT:
            self._prepare(conn)
            result = pgconn.exec_prepared(self.name, values)
            if _sqlstate(result) == _UNDEFINED_PREPARED_STATEMENT:
                self._prepared_on.discard(conn)
                raise PreparedStatementLost(
                    f"prepared statement {self.name.decode()} vanished right after PREPARE")
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        return [
            tuple(_decode(result.get_value(row, col)) for col in range(result.nfields))
            for row in range(result.ntuples)
        ]

    def _prepare(self, conn: psycopg.Connection) -> None:
        result = conn.pgconn.prepare(self.name, self.query)
        if _sqlstate(result) == _DUPLICATE_PREPARED_STATEMENT:
            raise PreparedStatementLost(
                f"prepared statement {self.name.decode()} already exists on a session "
                "this connection never prepared it on")
        if result.status != pq.ExecStatus.COMMAND_OK:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        self._prepared_on.add(conn)


def _sqlstate(result: pq.abc.PGresult) -> bytes | None:
    if result.status != pq.ExecStatus.FATAL_ERROR:
        return None
    return result.error_field(pq.DiagnosticField.SQLSTATE)


def _text(value: object) -> bytes | None:
    """A parameter in PostgreSQL's text format (the server infers its type)."""
    if value is None:
        return None
    if isinstance(value, str):
        if "\x00" in value:  # libpq would cut the value there; psycopg refuses it too
            raise ValueError("PostgreSQL text cannot contain NUL (0x00) characters")
        return value.encode()
    if isinstance(value, datetime):
        return value.isoformat().encode()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value).encode()
    raise TypeError(f"no text form for a parameter of type {type(value).__name__}")


def _decode(value: bytes | None) -> str | None:
    return None if value is None else value.decode()
