"""Shared pieces of the worker tests: fast intervals and the run-log table."""

from __future__ import annotations

from pathlib import Path

import psycopg

TESTS = str(Path(__file__).resolve().parent)
"""This directory: the worker subprocesses import the suite's apps (``apps.*``) from it."""

FAST = (
    "--lease", "2", "--heartbeat-interval", "0.3", "--rescue-interval", "0.3",
    "--poll-interval", "0.5", "--backoff-base", "0.05", "--backoff-cap", "0.2",
    "--grace", "5",
)
"""Worker options that make lease expiry, rescue and retries take fractions of a second."""


def create_runs_table(db: psycopg.Connection, schema: str) -> None:
    """The table ``tests/apps/basic.py`` tasks append to (one row per run event)."""
    db.execute(
        f'CREATE TABLE "{schema}".test_runs (id bigserial PRIMARY KEY, job_id bigint, '
        "attempt int, kind text, value text, pid int, at timestamptz DEFAULT clock_timestamp())"
    )


def runs(db: psycopg.Connection, schema: str, kind: str | None = None) -> list[tuple]:
    """(job_id, attempt, kind, value, pid) rows in the order they were written."""
    query = f'SELECT job_id, attempt, kind, value, pid FROM "{schema}".test_runs'
    if kind is not None:
        return db.execute(query + " WHERE kind = %s ORDER BY id", (kind,)).fetchall()
    return db.execute(query + " ORDER BY id").fetchall()
