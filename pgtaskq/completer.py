"""The completer: one thread that writes job outcomes in batches.

One UPDATE per finished job is what makes naive queues slow; here every outcome that
arrives within a few milliseconds (or up to a batch size) is written by one statement of
``unnest()`` arrays. The same statement adds the batch to the per-minute rollups that
``pgtaskq stats`` reads (``pgtaskq.rollup``), so statistics cost no extra round trip or
transaction. A batch that fails to write (the database restarted, a connection was
killed) is kept and written again with backoff: an outcome is never dropped while the
process lives. Until it is written, the job stays held, so the heartbeat keeps its lease.

At-least-once: if the process dies between a job's end and the flush (at most
``flush_interval`` plus the statement's time, or the length of an outage), its lease
expires and the job runs again.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from pgtaskq import defaults, rollup
from pgtaskq.errors import first_line
from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgtaskq.held import HeldJob, HeldJobs

log = logging.getLogger("pgtaskq.worker")

MAX_FLUSH_BACKOFF = 5.0


@dataclass(slots=True)
class Outcome:
    """How one attempt ended, as the completer writes it."""

    job_id: int
    attempt: int
    kind: str  # succeeded | failed | retry | cancelled | discarded (failed, never retried)
    error: str | None = None
    result: str | None = None  # JSON text
    delay: float | None = None  # retry delay override, seconds
    queue: str = ""
    task: str = ""
    wait_ms: float = 0.0
    run_ms: float = 0.0
    max_attempts: int = 1  # tells a retried attempt from a final failure in the rollups

    @classmethod
    def _of(cls, job: HeldJob, kind: str, **fields: object) -> Outcome:
        error = fields.get("error")
        if isinstance(error, str) and "\x00" in error:  # PostgreSQL text cannot hold NUL
            fields["error"] = error.replace("\x00", "\\x00")
        now = time.monotonic()
        run_ms = (now - job.running_since) * 1000 if job.running_since else 0.0
        return cls(job.id, job.attempt, kind, queue=job.queue, task=job.task,
                   wait_ms=job.wait_ms, run_ms=run_ms, max_attempts=job.max_attempts,
                   **fields)  # type: ignore[arg-type]

    @classmethod
    def succeeded(cls, job: HeldJob, result: str | None) -> Outcome:
        return cls._of(job, "succeeded", result=result)

    @classmethod
    def failed(cls, job: HeldJob, error: str) -> Outcome:
        return cls._of(job, "failed", error=error)

    @classmethod
    def discarded(cls, job: HeldJob, error: str) -> Outcome:
        """Failed for good, whatever attempts remain (``FinalFailure``)."""
        return cls._of(job, "discarded", error=error)

    @classmethod
    def retry(cls, job: HeldJob, delay: float | None, error: str) -> Outcome:
        return cls._of(job, "retry", error=error, delay=delay)

    @classmethod
    def cancelled(cls, job: HeldJob, error: str) -> Outcome:
        return cls._of(job, "cancelled", error=error)


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
        self._pool = pool
        self._schema = schema
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
        failures = 0
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
            except psycopg.DataError as exc:
                # One outcome PostgreSQL cannot store must not hold the batch hostage.
                log.warning("a batch of %d job outcomes was refused (%s); writing them one "
                            "by one", len(batch), first_line(exc))
                batch = self._write_separately(batch)
                if batch:
                    time.sleep(MAX_FLUSH_BACKOFF / 10)
                    continue
                if stopping:
                    return
                continue
            except Exception as exc:
                failures += 1
                pause = min(MAX_FLUSH_BACKOFF, 0.05 * 2**failures)
                log.warning("could not write %d job outcomes (attempt %d, retrying in "
                            "%.2fs): %s", len(batch), failures, pause,
                            first_line(exc))
                time.sleep(pause)
                continue
            failures = 0
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
        self._held.release_all([(o.job_id, o.attempt) for o in outcomes])
        with self._idle:
            self._pending -= len(outcomes)
            self._idle.notify_all()
        self.written += len(outcomes)

    def _write_separately(self, batch: list[Outcome]) -> list[Outcome]:
        """Write outcomes one at a time; one that is refused as data becomes a plain
        ``failed`` outcome naming the reason. Returns those still unwritten (retried)."""
        left: list[Outcome] = []
        for outcome in batch:
            try:
                if self._write([outcome]):
                    left.append(outcome)  # its row was locked: later
                    continue
            except psycopg.DataError as exc:
                replacement = dataclasses.replace(
                    outcome, kind="failed", result=None, delay=None,
                    error=f"pgtaskq could not store this attempt's outcome "
                          f"({outcome.kind}): {first_line(exc)}")
                log.warning("job %d: outcome refused by PostgreSQL (%s); recorded as failed",
                            outcome.job_id, first_line(exc))
                try:
                    self._write([replacement])
                except Exception:
                    left.append(outcome)
                    continue
            except Exception:
                left.append(outcome)
                continue
            self._written([outcome])
        return left

    def _write(self, batch: list[Outcome]) -> set[int]:
        """Write ``batch``; return the ids of jobs still held whose rows were locked by
        another transaction (not written: the caller writes them again)."""
        params = complete_params(self._worker_id, batch, *self._backoff)
        with self._pool.connection(timeout=5) as conn:
            rows = conn.execute(render(self._schema, worker_sql.COMPLETE), params).fetchall()
        busy: set[int] = set()
        for kind, job_id, seconds_until in rows:
            if kind == "busy":
                busy.add(job_id)
            elif (kind == "requeued" and seconds_until is not None
                  and self._on_requeued is not None):
                self._on_requeued(float(seconds_until))
        return busy


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
