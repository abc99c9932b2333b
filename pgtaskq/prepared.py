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
- every other failure raises the same ``psycopg`` exception a cursor would have raised.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import psycopg
from psycopg import pq

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_UNDEFINED_PREPARED_STATEMENT = "26000"


class PreparedStatement:
    """One ``%(name)s`` statement, converted to ``$n`` placeholders and run by name."""

    def __init__(self, name: str, query: str) -> None:
        self.name = name.encode()
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
        if (
            result.status == pq.ExecStatus.FATAL_ERROR
            and result.error_field(pq.DiagnosticField.SQLSTATE)
            == _UNDEFINED_PREPARED_STATEMENT.encode()
        ):
            self._prepare(conn)
            result = pgconn.exec_prepared(self.name, values)
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        return [
            tuple(_decode(result.get_value(row, col)) for col in range(result.nfields))
            for row in range(result.ntuples)
        ]

    def _prepare(self, conn: psycopg.Connection) -> None:
        result = conn.pgconn.prepare(self.name, self.query)
        if result.status != pq.ExecStatus.COMMAND_OK:
            raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        self._prepared_on.add(conn)


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
