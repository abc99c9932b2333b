"""The completer: one thread that writes job outcomes in batches.

One UPDATE per finished job is what makes naive queues slow; here every outcome that
arrives within a few milliseconds (or up to a batch size) is written by one statement of
``unnest()`` arrays. The same statement adds the batch to the per-minute rollups that
``pgtaskq stats`` reads (``pgtaskq.worker.rollup``), so statistics cost no extra round trip or
transaction. A batch that fails to write (the database restarted, a connection was
killed) is kept and written again with backoff: an outcome is never dropped while the
process lives. Until it is written, the job stays held, so the heartbeat keeps its lease.

At-least-once: if the process dies between a job's end and the flush (at most
``flush_interval`` plus the statement's time, or the length of an outage), its lease
expires and the job runs again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg

from pgtaskq import defaults
from pgtaskq.backoff import Backoff
from pgtaskq.errors import first_line
from pgtaskq.sql import worker as worker_sql
from pgtaskq.storable import safe_text
from pgtaskq.worker import rollup
from pgtaskq.worker.database import Statements
from pgtaskq.worker.outcome import Outcome

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgtaskq.worker.held import HeldJobs

log = logging.getLogger("pgtaskq.worker")

MAX_FLUSH_BACKOFF = 5.0


class Completer:
    """Collects outcomes from the slots and flushes them in batches."""

    def __init__(
        self,
        pool: ConnectionPool,
        schema: str,
        worker_id: int,
        held: HeldJobs,
        *,
        flush_interval: float = defaults.COMPLETER_FLUSH_INTERVAL,
        batch_size: int = defaults.COMPLETER_BATCH_SIZE,
        backoff_base: float = defaults.BACKOFF_BASE,
        backoff_cap: float = defaults.BACKOFF_CAP,
        on_requeued: Callable[[float], None] | None = None,
    ) -> None:
        self._db = Statements(pool, schema)
        self._worker_id = worker_id
        self._held = held
        self._flush_interval = flush_interval
        self._batch_size = batch_size
        self._backoff = (backoff_base, backoff_cap)
        self._on_requeued = on_requeued
        self._inbox: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="pgtaskq-completer",
                                        daemon=True)
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._idle = threading.Condition(self._pending_lock)
        self.written = 0
        self.busy_retries = 0
        """Outcomes written again because another transaction held their row's lock."""

    def start(self) -> None:
        self._thread.start()

    def add(self, outcome: Outcome) -> None:
        with self._pending_lock:
            self._pending += 1
        self._inbox.put(outcome)

    def flush_and_stop(self, timeout: float) -> bool:
        """Write everything received so far, then stop; False if it could not in time."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending and time.monotonic() < deadline:
                self._idle.wait(max(0.0, min(0.1, deadline - time.monotonic())))
            drained = self._pending == 0
        self._inbox.put(None)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return drained

    def _loop(self) -> None:
        batch: list[Outcome] = []
        backoff = Backoff(0.1, MAX_FLUSH_BACKOFF)
        stopping = False
        while True:
            if not batch:
                item = self._inbox.get()
                if item is None:
                    return
                batch.append(item)
                # Let the batch gather by sleeping through the flush interval, rather than
                # waking for every outcome: at 10,000 jobs/s those wake-ups were a
                # thread switch per job, fighting the slots for the GIL.
                if self._inbox.qsize() < self._batch_size:
                    time.sleep(self._flush_interval)
            while len(batch) < self._batch_size:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                busy = self._write(batch)
            except Exception as exc:
                if _transient(exc):
                    pause = backoff.failed()
                    log.warning("could not write %d job outcomes (attempt %d, retrying in "
                                "%.2fs): %s", len(batch), backoff.failures, pause,
                                first_line(exc))
                    time.sleep(pause)
                    continue
                # Not the database going away: some outcome of the batch cannot be
                # stored. It must not hold the others hostage.
                log.warning("a batch of %d job outcomes was refused (%s); finding the one "
                            "that cannot be stored", len(batch), first_line(exc))
                batch = self._write_split(batch, exc)
                if batch:
                    time.sleep(MAX_FLUSH_BACKOFF / 10)
                    continue
                if stopping:
                    return
                continue
            backoff.succeeded()
            if busy:
                # rows another transaction had locked: write them again shortly
                self.busy_retries += len(busy)
                self._written([o for o in batch if o.job_id not in busy])
                batch = [o for o in batch if o.job_id in busy]
                time.sleep(self._flush_interval)
                continue
            self._written(batch)
            batch = []
            if stopping:
                return

    def _written(self, outcomes: list[Outcome]) -> None:
        """Count ``outcomes`` as written (``_write`` has released their jobs)."""
        with self._idle:
            self._pending -= len(outcomes)
            self._idle.notify_all()
        self.written += len(outcomes)

    def _write_split(self, batch: list[Outcome], error: Exception) -> list[Outcome]:
        """Write a refused batch in halves, down to the outcome that cannot be stored,
        which is then written in a form that can (``_write_unstorable``). Returns the
        outcomes still unwritten (their rows were locked, or the database went away):
        the caller writes them again. About 2 log2(n) statements for one bad outcome in
        n, so the others are written within a second."""
        if len(batch) == 1:
            return [] if self._write_unstorable(batch[0], error) else batch
        middle = len(batch) // 2
        left: list[Outcome] = []
        for half in (batch[:middle], batch[middle:]):
            try:
                busy = self._write(half)
            except Exception as exc:
                left += half if _transient(exc) else self._write_split(half, exc)
                continue
            self._written([o for o in half if o.job_id not in busy])
            left += [o for o in half if o.job_id in busy]
        return left

    def _write_unstorable(self, outcome: Outcome, error: Exception) -> bool:
        """Write the one outcome PostgreSQL refused, as the nearest thing it accepts:
        a success without its result, else a failure for good with a short error, else
        (the job row itself cannot be archived) ``FAIL_UNSTORABLE``. True once written."""
        reason = safe_text(first_line(error), 300)
        attempts: list[tuple[str, Outcome]] = []
        if outcome.kind == "succeeded" and outcome.result is not None:
            attempts.append(("succeeded without its result", dataclasses.replace(
                outcome, result=json.dumps(f"<result not stored by pgtaskq: {reason}>"))))
        message = (f"pgtaskq could not store this attempt's outcome ({outcome.kind}): "
                   f"{reason}")
        attempts.append(("failed", dataclasses.replace(
            outcome, kind="discarded", result=None, delay=None, error=message)))
        for recorded_as, replacement in attempts:
            try:
                busy = self._write([replacement])
            except Exception as exc:
                if _transient(exc):
                    return False
                continue
            if busy:
                return False
            log.warning("job %d (%s): outcome refused by PostgreSQL (%s); recorded as %s",
                        outcome.job_id, outcome.task[:200], reason, recorded_as)
            self._written([outcome])
            return True
        try:
            with self._held.settling:
                self._db.execute(worker_sql.FAIL_UNSTORABLE, {
                    "id": outcome.job_id, "attempt": outcome.attempt,
                    "worker_id": self._worker_id, "error": message})
                self._held.release(outcome.job_id, outcome.attempt)
        except Exception as exc:
            log.warning("job %d: its outcome cannot be stored in any form (%s); trying "
                        "again", outcome.job_id, first_line(exc))
            return False
        log.warning("job %d: its row cannot be archived as it is (%s); recorded as failed "
                    "with its names cut", outcome.job_id, reason)
        self._written([outcome])
        return True

    def _write(self, batch: list[Outcome]) -> set[int]:
        """Write ``batch``; return the ids of jobs still held whose rows were locked by
        another transaction (not written: the caller writes them again).

        The statement and the release of the written jobs from ``HeldJobs`` happen under
        ``held.settling``: the heartbeat judges the leases it found missing under the same
        lock, so a job whose outcome was just written is never reported as a lost lease.
        """
        params = complete_params(self._worker_id, batch, *self._backoff)
        with self._held.settling:
            rows = self._db.fetchall(worker_sql.COMPLETE, params)
            busy = {row.id for row in rows if row.kind == "busy"}
            self._held.release_all([(o.job_id, o.attempt) for o in batch
                                    if o.job_id not in busy])
        if self._on_requeued is not None:
            for row in rows:
                if row.kind == "requeued" and row.seconds_until is not None:
                    self._on_requeued(float(row.seconds_until))
        return busy


def _transient(exc: Exception) -> bool:
    """Whether a failed write may work as it is later (the database or the connection
    went away, a deadlock, a timeout), rather than being refused for what it holds."""
    if isinstance(exc, psycopg.errors.ProgramLimitExceeded):  # a row too big for an index
        return False
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


def complete_params(worker_id: int, batch: list[Outcome], backoff_base: float,
                    backoff_cap: float) -> dict[str, object]:
    """Parameters of ``COMPLETE`` for ``batch``, sorted by job id: the statement locks the
    rows in the order of its arrays, and id order everywhere means no deadlocks."""
    batch = sorted(batch, key=lambda o: o.job_id)
    return {
        "worker_id": worker_id,
        "ids": [o.job_id for o in batch],
        "attempts": [o.attempt for o in batch],
        "kinds": [o.kind for o in batch],
        "errors": [o.error for o in batch],
        "results": [o.result for o in batch],
        "delays": [o.delay for o in batch],
        **rollup.params(batch),
        "backoff_base": backoff_base,
        "backoff_cap": backoff_cap,
    }
