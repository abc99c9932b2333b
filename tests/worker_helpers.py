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


FAKE_WORKER = 424242
"""A worker id no real worker has: statements run "as a worker" by the tests."""


def status_of(tq, job_id):
    job = tq.get_job(job_id)
    return job.status if job else None


def claim(conn, tq, tasks, limit=10, worker_id=FAKE_WORKER, queues=None):
    """Lease jobs with the worker's own claim statement, as worker ``worker_id``."""
    from pgtaskq import defaults
    from pgtaskq.sql import render
    from pgtaskq.sql import worker as worker_sql

    return conn.execute(render(tq.schema, worker_sql.CLAIM), {
        "worker_id": worker_id, "tasks": tasks, "limit": limit, "lease": 60,
        "claimers": defaults.CLAIMERS, "queues": queues,
    }).fetchall()


def stats_row(db, tq, task):
    return db.execute(
        f'SELECT sum(succeeded), sum(failed), sum(retried), sum(cancelled) '
        f'FROM "{tq.schema}".stats_minute WHERE task = %s', (task,)).fetchone()


def without_option(options, name):
    """``options`` (flag, value pairs) without ``name`` and its value."""
    pairs = list(zip(options[::2], options[1::2], strict=True))
    return [item for pair in pairs if pair[0] != name for item in pair]
