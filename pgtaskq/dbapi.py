"""Run pgtaskq's statements on whatever connection the caller hands us.

``enqueue(..., conn=...)`` must write in the caller's own transaction, and callers hold
psycopg 3 connections, psycopg2 connections or Django's connection proxy. All three accept
``%(name)s`` parameters through a cursor, so one small function covers them; pgtaskq never
commits, rolls back or changes the autocommit mode of a connection it did not open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import tuple_row


def execute(conn: Any, query: str, params: Mapping[str, Any] | None = None) -> list[tuple]:
    """Execute ``query`` on ``conn`` and return all rows as tuples (empty when none).

    Callers' connections often return dicts (``row_factory=dict_row``, psycopg2's
    ``RealDictCursor``); pgtaskq reads columns by position, so rows are made tuples here.
    """
    if isinstance(conn, psycopg.Connection):
        with conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description is not None else []
    if not hasattr(conn, "cursor"):
        raise TypeError(
            f"conn= must be a psycopg 3, psycopg2 or Django connection, "
            f"got {type(conn).__name__}"
        )
    cur = conn.cursor()
    try:
        cur.execute(query, params)
        rows: Sequence[Any] = cur.fetchall() if cur.description is not None else []
        # RealDictRow is a dict in column order: its values, not its keys, are the row.
        return [tuple(row.values()) if isinstance(row, Mapping) else tuple(row) for row in rows]
    finally:
        cur.close()


UNDEFINED_TABLE = "42P01"
UNIQUE_VIOLATION = "23505"


def sqlstate(exc: BaseException | None) -> str | None:
    """The SQLSTATE of a database error from psycopg 3, psycopg2 or Django; else None.

    Errors raised on a caller's connection come from whichever driver it uses (Django
    wraps the driver's error and keeps it as ``__cause__``), so they are recognised by
    their SQLSTATE rather than by class.
    """
    for _ in range(4):
        if exc is None:
            return None
        code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if isinstance(code, str):
            return code
        exc = exc.__cause__
    return None
