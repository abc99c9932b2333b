"""Run the queued jobs of a TaskQueue here and now, in the calling thread (tests).

``run_queued_jobs(tq)`` is public; it needs no pytest (``manage.py test`` has none).
A test that enqueued jobs wants to see them run without starting a worker process, and
often inside its own transaction (Django's ``TestCase``, a Flask test that rolls back):
a worker could not even see those jobs. So this runs the worker's own statements
(register, ``claim_jobs()``, ``COMPLETE``) on the connection the queue enqueues on, and
each job through the slot's own code path
(middlewares, ``async def``, ``Retry``, result serialisation), one job at a time. Jobs
come due in claim order; a job that enqueues another job runs that one too; a failed
attempt with attempts left is queued again after its backoff, which is in the future, so
the run ends instead of retrying at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pgtaskq import dbapi, defaults
from pgtaskq._version import __version__
from pgtaskq.context import JobContext
from pgtaskq.queue import DEFAULT_CONNECTION
from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql
from pgtaskq.worker.completer import complete_params
from pgtaskq.worker.held import HeldJob
from pgtaskq.worker.slots import run_attempt

if TYPE_CHECKING:
    from pgtaskq.queue import TaskQueue

INLINE_LEASE = 3600.0
"""The lease an inline run takes: nothing else should take the job while it runs here."""


def run_queued_jobs(tq: TaskQueue, *, queues: list[str] | None = None, conn: Any = None,
                    max_jobs: int = 10_000) -> list[int]:
    """Run every job of ``tq``'s registered tasks that is due now, one at a time in this
    thread, until none is left; return the ids run, in order.

    Jobs are read and written on ``conn``, else on the connection ``tq`` enqueues on
    (Django's connection for ``get_queue()``, the request's for Flask's ``PgTaskQ``), else
    on ``tq``'s own pool: so in a Django ``TestCase`` the jobs the test enqueued run inside
    its transaction and roll back with it. A job runs as in a worker: job middlewares,
    ``current_job()``, ``async def``, ``Retry``, result storage. A failure with attempts
    left is queued again after its backoff, so it does not run again in this call. Read
    outcomes with ``tq.get_job`` (Django: ``get_queue().read_job`` or ``get_result``).
    """
    if not tq.tasks:
        return []
    with _connection(tq, conn) as db:
        worker_id = _register(tq, db, queues)
        try:
            return _drain(tq, db, worker_id, queues, max_jobs)
        finally:
            dbapi.execute(db, render(tq.schema, worker_sql.WORKER_STOPPED),
                          {"worker_id": worker_id})


@contextlib.contextmanager
def _connection(tq: TaskQueue, conn: Any) -> Iterator[Any]:
    """``conn``, else the connection the queue enqueues on (Django's, a Flask request's),
    else one of the queue's own pool (autocommit)."""
    chosen = tq.connection_for_enqueue(DEFAULT_CONNECTION if conn is None else conn)
    if chosen is not None:
        yield chosen
        return
    with tq.connection() as own:
        yield own


def _register(tq: TaskQueue, db: Any, queues: list[str] | None) -> int:
    rows = dbapi.execute(db, render(tq.schema, worker_sql.REGISTER_WORKER), {
        "host": socket.gethostname(), "pid": os.getpid(), "queues": queues,
        "concurrency": 1, "version": __version__, "heartbeat_interval": INLINE_LEASE,
    })
    return int(rows[0][0])


def _drain(tq: TaskQueue, db: Any, worker_id: int, queues: list[str] | None,
           max_jobs: int) -> list[int]:
    claim = render(tq.schema, worker_sql.CLAIM)
    complete = render(tq.schema, worker_sql.COMPLETE)
    ran: list[int] = []
    while len(ran) < max_jobs:
        rows = dbapi.execute(db, claim, {
            "worker_id": worker_id, "tasks": sorted(tq.tasks), "limit": 1,
            "lease": INLINE_LEASE, "queues": queues, "claimers": 0,
        })
        if not rows:
            break
        job_id, task, queue, args, kwargs, _priority, attempt, max_attempts, wait_ms = rows[0]
        registered = tq.tasks.get(task)
        held = HeldJob(
            job_id, task, queue, _decoded(args) or [], _decoded(kwargs) or {}, attempt,
            max_attempts, wait_ms or 0.0,
            JobContext(job_id, task, queue, attempt, max_attempts, worker_id),
            registered.timeout if registered is not None else None,
            func=registered.func if registered is not None else None,
        )
        outcome = run_attempt(held, tq.job_middlewares, tq.job_hooks)
        dbapi.execute(db, complete, complete_params(
            worker_id, [outcome], defaults.BACKOFF_BASE, defaults.BACKOFF_CAP))
        ran.append(job_id)
    return ran


def _decoded(value: Any) -> Any:
    """jsonb as the driver returned it: Django's drivers leave it as text."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value
