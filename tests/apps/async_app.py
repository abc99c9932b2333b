"""``async def`` tasks for the worker tests; each logs to the test's run table."""

from __future__ import annotations

import asyncio
import os

import psycopg

from pgtaskq import TaskQueue, current_job

tq = TaskQueue()


def _record(kind: str, value: object = None) -> None:
    job = current_job()
    with psycopg.connect(os.environ["PGTASKQ_DSN"], autocommit=True) as conn:
        conn.execute(
            f'INSERT INTO "{tq.schema}".test_runs (job_id, attempt, kind, value, pid) '
            "VALUES (%s, %s, %s, %s, %s)",
            (job.id, job.attempt, kind, None if value is None else str(value), os.getpid()),
        )


@tq.task(name="async_add")
async def async_add(a, b):
    await asyncio.sleep(0.05)
    _record("ran", a + b)  # current_job() works inside the coroutine
    return {"sum": a + b, "job": current_job().id}


@tq.task(name="async_sleep", timeout=1, max_attempts=1)
async def async_sleep(seconds):
    _record("started")
    await asyncio.sleep(seconds)
    _record("finished")
    return "late"


@tq.task(name="async_wait")
async def async_wait(seconds):
    _record("started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _record("cancelled")
        raise
    return "not cancelled"
