"""Tasks for worker tests. Each task appends to a table the test created, so a test can
count what really ran (and how often) from outside the worker process."""

from __future__ import annotations

import os
import signal
import time

import psycopg

from pgtaskq import Retry, TaskQueue, current_job

tq = TaskQueue()


def _record(kind: str, value: object = None) -> None:
    job = current_job()
    with psycopg.connect(os.environ["PGTASKQ_DSN"], autocommit=True) as conn:
        conn.execute(
            f'INSERT INTO "{tq.schema}".test_runs (job_id, attempt, kind, value, pid) '
            "VALUES (%s, %s, %s, %s, %s)",
            (job.id, job.attempt, kind, None if value is None else str(value), os.getpid()),
        )


@tq.task(name="record")
def record(value=None):
    _record("ran", value)
    return value


@tq.task(name="noop")
def noop(value=None):
    return value


@tq.task(name="sleep")
def sleep(seconds):
    _record("started", seconds)
    time.sleep(seconds)
    _record("finished", seconds)
    return seconds


@tq.task(name="fail", max_attempts=3)
def fail(message="boom"):
    _record("failed", message)
    raise RuntimeError(message)


@tq.task(name="retry_then_succeed", max_attempts=5)
def retry_then_succeed(times):
    job = current_job()
    _record("attempt", job.attempt)
    if job.attempt <= times:
        raise Retry(delay=0.1)
    return job.attempt


@tq.task(name="cancellable")
def cancellable(seconds=30):
    job = current_job()
    _record("started")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job.check_cancelled()
        time.sleep(0.01)
    return "not cancelled"


@tq.task(name="slow_timeout", timeout=0.5, max_attempts=2)
def slow_timeout(seconds=2):
    _record("started")
    time.sleep(seconds)
    _record("finished")
    return "late"


@tq.task(name="kill_self", max_attempts=2)
def kill_self():
    _record("started")
    os.kill(os.getpid(), signal.SIGKILL)


@tq.task(name="system_exit", max_attempts=1)
def system_exit():
    raise SystemExit(3)


@tq.task(name="unserialisable")
def unserialisable():
    return {1, 2, 3}


@tq.task(name="surrogate_result", max_attempts=1)
def surrogate_result():
    return "\ud800"  # valid for json.dumps ("\\ud800"), refused by jsonb: a data error
