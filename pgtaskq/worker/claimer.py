"""The claim: lease as many jobs as the worker has room for, in ONE statement, and hand
them to the slots.

A worker never fetches jobs it cannot start soon (``pgtaskq.worker.capacity``). The
statement is ``claim_jobs`` (``pgtaskq.sql.worker.CLAIM``); its rows come back in claim
order, the order the slots start them, and are read by column name. Each job's arguments
are decoded on its own, and its task function looked up once, here: a job whose
arguments Python cannot decode, or whose task this worker does not have, fails at once
and for good (every attempt would fail the same way), and the rest of the batch runs.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

from pgtaskq.backoff import Backoff
from pgtaskq.context import JobContext
from pgtaskq.errors import first_line
from pgtaskq.sql import worker as worker_sql
from pgtaskq.worker.database import Statements, load_jsonb_as_text
from pgtaskq.worker.held import HeldJob
from pgtaskq.worker.outcome import Outcome

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgtaskq.queue import TaskQueue
    from pgtaskq.worker.capacity import Capacity
    from pgtaskq.worker.completer import Completer
    from pgtaskq.worker.due import DueTimes
    from pgtaskq.worker.exit_rules import ExitRules
    from pgtaskq.worker.held import HeldJobs
    from pgtaskq.worker.parker import Parker
    from pgtaskq.worker.slots import Slots
    from pgtaskq.worker.timeouts import Timeouts
    from pgtaskq.worker.vacuum import JobsVacuum
    from pgtaskq.worker.waiting import Waiting

log = logging.getLogger("pgtaskq.worker")

CLAIM_ERROR_BACKOFF_MAX = 5.0
SLOW_CLAIM = 0.02
"""A claim slower than this (seconds) asks the parker to look at the head of the ready
index now: it may be walking jobs no claim can take (``pgtaskq.worker.parker``)."""


def undecodable_message(args_text: str, kwargs_text: str | None, exc: Exception) -> str:
    """``last_error`` of a job whose arguments Python's json cannot decode."""
    if isinstance(exc, RecursionError):
        why = "its arguments are nested deeper than Python's json can decode"
    else:
        why = f"Python's json refuses its arguments ({first_line(exc)})"
    raw = args_text if kwargs_text is None else f"{args_text} {kwargs_text}"
    return (f"UndecodableJob: {why}; failed without running, as every attempt would. "
            f"Arguments as stored ({len(raw)} characters): {raw[:200]}")


class Claimer:
    """Leases jobs for the main loop (main thread only)."""

    def __init__(self, pool: ConnectionPool, tq: TaskQueue, worker_id: int, *,
                 tasks: list[str], queues: list[str] | None, lease: float, claimers: int,
                 capacity: Capacity, held: HeldJobs, slots: Slots, completer: Completer,
                 exit_rules: ExitRules, due: DueTimes, timeouts: Timeouts,
                 parker: Parker, vacuum: JobsVacuum, waiting: Waiting) -> None:
        self._db = Statements(pool, tq.schema)
        self._tq = tq
        self._worker_id = worker_id
        self._params = {"worker_id": worker_id, "tasks": tasks, "limit": 0,
                        "lease": lease, "queues": queues, "claimers": claimers}
        self._capacity = capacity
        self._held = held
        self._slots = slots
        self._completer = completer
        self._exit_rules = exit_rules
        self._due = due
        self._timeouts = timeouts
        self._parker = parker
        self._vacuum = vacuum
        self._backoff = Backoff(0.2, CLAIM_ERROR_BACKOFF_MAX)
        self._waiting = waiting
        self.not_before = 0.0
        """``time.monotonic()`` before which no claim runs (a failed claim backs off)."""

    def claim(self) -> int:
        """Lease jobs for the free room; return how many came back."""
        limit = self._exit_rules.cap(self._capacity.room())
        if limit <= 0:
            return 0
        held_before = self._capacity.outstanding
        self._due.unpark_if_due()
        started = time.monotonic()
        try:
            # args and kwargs as JSON text, decoded job by job below: psycopg's jsonb
            # loader raising for one job lost the leases of the whole batch
            rows = self._db.fetchall(worker_sql.CLAIM, {**self._params, "limit": limit},
                                     adapt=load_jsonb_as_text)
        except Exception as exc:
            pause = self._backoff.failed()
            self.not_before = time.monotonic() + pause
            log.warning("leasing jobs failed (attempt %d, next in %.1fs): %s",
                        self._backoff.failures, pause, first_line(exc))
            return 0
        if self._backoff.succeeded():
            log.info("leasing jobs works again")
        if time.monotonic() - started > SLOW_CLAIM:
            self._parker.nudge()  # maybe walking jobs it cannot take: park them
        self._capacity.claimed(len(rows), limit)
        self._exit_rules.claimed(len(rows), held_before)
        self._vacuum.claimed(len(rows))
        self._start(rows)
        claim_again = self._waiting.claimed(len(rows) == limit)  # after: the jobs run meanwhile
        if len(rows) < limit:
            # A due deferred job the claim did not return (another queue's, or taken by
            # another worker) must be forgotten now, or the loop would spin until the
            # rate-limited look-up runs again.
            self._due.lookup(force=self._due.deferred_due(time.monotonic()))
        if claim_again:  # announced waiting: a job committed before may not be in this claim
            return len(rows) + self.claim()
        return len(rows)

    def _start(self, rows: list) -> None:
        """Hold each claimed job and hand it to the slots, in claim order."""
        tasks = self._tq.tasks
        worker_id = self._worker_id
        submit = self._slots.submit
        add = self._held.add
        loads = json.loads
        for row in rows:
            job_id, task = row.id, row.task
            registered = tasks.get(task)
            held = HeldJob(
                job_id, task, row.queue, [], {}, row.attempts, row.max_attempts,
                row.wait_ms,
                JobContext(job_id, task, row.queue, row.attempts, row.max_attempts,
                           worker_id),
                registered.timeout if registered is not None else None,
                func=registered.func if registered is not None else None,
            )
            add(held)
            try:
                held.args = loads(row.args)
                if row.kwargs is not None:
                    held.kwargs = loads(row.kwargs)
            except (ValueError, RecursionError) as exc:
                self._fail_for_good(held, undecodable_message(row.args, row.kwargs, exc))
                continue
            if registered is None:
                self._fail_for_good(held, f"LookupError: task {task!r} is not registered in "
                                          f"worker {worker_id}")
                continue
            if held.timeout is not None:
                self._timeouts.watch(held)
            submit(held)

    def _fail_for_good(self, job: HeldJob, error: str) -> None:
        """End a leased job that cannot run here as ``failed``, with no retry: decoding
        and task look-up would fail the same way at every attempt."""
        log.error("job %d (%s) failed for good: %s", job.id, job.task[:200],
                  error.splitlines()[0][:300])
        job.finished = True
        self._completer.add(Outcome.discarded(job, error))
        self._capacity.dropped()
