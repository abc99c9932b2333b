"""The worker process: a main loop that leases jobs and hands them to slot threads.

Life of a worker, top to bottom (``Worker.run``): check the schema, register in the
workers table, start the completer, slots, heartbeat, rescuer and pruner threads, LISTEN,
tell systemd READY, loop, and on the way out hand back what will not be finished.

The main loop (``_loop``/``_iterate``) sleeps in ``select()`` on the LISTEN socket and a
self-pipe (``Listener``). It wakes on a NOTIFY for a queue it serves, a slot finishing
while a backlog is known, a cancel request, a signal, a task timeout, the next known
deferred job, or the poll interval (the fallback that makes NOTIFY an optimisation, never
a requirement). It then leases at most as many jobs as it has free capacity, in ONE
statement, and never more: a worker never fetches jobs it cannot start soon. Capacity is
the slots plus a prefetch buffer that is sized from how long jobs take, so buffered jobs
wait for a slot about ``PREFETCH_HORIZON`` at most (short jobs get many, long jobs none:
one worker never hoards a backlog that idle workers could run), and the heartbeat covers
them while they wait.

Invariants:
- no transaction stays open while a job runs: the lease is a committed UPDATE;
- a job runs in at most one slot anywhere at a time, as long as heartbeats reach the
  database within the lease; a timed-out job keeps its slot and its lease until its
  function returns;
- every outcome is written, or the job's lease expires and it runs again (at-least-once).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
from psycopg import sql
from psycopg.types.string import TextLoader
from psycopg_pool import PoolTimeout

from pgtaskq import defaults, embedded, forking, options
from pgtaskq._version import __version__
from pgtaskq.context import JobContext
from pgtaskq.errors import ConfigurationError, first_line
from pgtaskq.options import check_queue
from pgtaskq.pool import LivenessCheck, open_pool
from pgtaskq.sql import registry as registry_sql
from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql
from pgtaskq.worker import systemd
from pgtaskq.worker.completer import Completer, Outcome
from pgtaskq.worker.exit_rules import ExitRules
from pgtaskq.worker.heartbeat import Heartbeat
from pgtaskq.worker.held import HeldJob, HeldJobs
from pgtaskq.worker.hints import NotificationHints
from pgtaskq.worker.listener import Events, Listener
from pgtaskq.worker.parker import Parker
from pgtaskq.worker.pruner import Pruner
from pgtaskq.worker.rescuer import Rescuer
from pgtaskq.worker.scheduler import CronScheduler
from pgtaskq.worker.slots import Slots

if TYPE_CHECKING:
    from pgtaskq.queue import TaskQueue

log = logging.getLogger("pgtaskq.worker")

DEFERRED_LOOKUP_MIN_INTERVAL = 0.25
"""Least time between two look-ups of the next deferred job's run_at."""

CLAIM_ERROR_BACKOFF_MAX = 5.0
PREFETCH_HORIZON = 0.05
"""Seconds a prefetched job should wait for a slot, at the recent average job duration."""
PREFETCH_MAX_PER_SLOT = 32
"""Adaptive prefetch never buffers more than this many jobs per slot."""
MAX_UNACKNOWLEDGED = 2 * defaults.COMPLETER_BATCH_SIZE
"""Finished jobs whose outcome the completer has not written yet, beyond which the worker
stops leasing. Without this bound a worker whose jobs finish faster than its completer
writes them keeps leasing: the finished-but-running rows pile up (14,000 in a 20,000-job
drain), every COMPLETE and heartbeat then works through all of them, and acknowledgements
fell to ~100 jobs/s for a minute after the jobs themselves had run."""
VACUUM_AFTER_CLAIMS = 50_000
"""Jobs this worker leases between two ``VACUUM (SKIP_LOCKED)`` runs on the jobs table.

Every claimed row leaves a dead entry at the head of the ready index, and each claim steps
over all of them until VACUUM removes them; autovacuum looks at a table about once a
minute (never, where it is off). Draining 1,000,000 jobs on PostgreSQL's defaults, the
rate fell from ~12,000 jobs/s to 8,287 half-way and 7,654 at the end (1,258 with
autovacuum off); with this VACUUM every 50,000 claims it was 13,956 / 12,486 / 13,615 at
the start, middle and end (every 100,000: 14,653 / 12,117 / 8,189), and the whole drain
took half the time. SKIP_LOCKED: a worker never waits for another's, nor for autovacuum."""
VACUUM_MIN_INTERVAL = 5.0
"""Least seconds between two such VACUUMs by one worker."""
SLOW_CLAIM = 0.02
"""A claim slower than this (seconds) asks the parker to look at the head of the ready
index now: it may be walking jobs no claim can take (``pgtaskq.worker.parker``)."""
UNPARK_BATCH = 10_000
"""Parked jobs taken back per statement."""
HAND_BACK_DELAY = 1.0
"""Jobs still running at the end of the grace period go back with this delay, so no other
worker starts them while this process's threads may still be inside them."""


def _undecodable_message(args_text: str, kwargs_text: str | None, exc: Exception) -> str:
    """``last_error`` of a job whose arguments Python's json cannot decode."""
    if isinstance(exc, RecursionError):
        why = "its arguments are nested deeper than Python's json can decode"
    else:
        why = f"Python's json refuses its arguments ({first_line(exc)})"
    raw = args_text if kwargs_text is None else f"{args_text} {kwargs_text}"
    return (f"UndecodableJob: {why}; failed without running, as every attempt would. "
            f"Arguments as stored ({len(raw)} characters): {raw[:200]}")


class LoopTimer(Protocol):
    """Work the main loop does on time (cron ticks): it wakes for ``seconds_until_due``.

    ``run_due`` runs in the main thread, so it must be quick (one statement or so);
    exceptions are logged and the loop goes on.
    """

    def seconds_until_due(self) -> float | None: ...

    def run_due(self) -> None: ...


def _positive(name: str, value: float) -> float:
    """A finite number > 0 (NaN or infinity would reach a thread's wait() and kill it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
    return options.check_seconds(name, value)


class Worker:
    """Runs the jobs of a TaskQueue: ``Worker(tq, concurrency=8).run()``."""

    def __init__(
        self,
        tq: TaskQueue,
        concurrency: int = defaults.CONCURRENCY,
        queues: list[str] | tuple[str, ...] | None = None,
        *,
        poll_interval: float = defaults.POLL_INTERVAL,
        lease: float = defaults.LEASE,
        claimers: int = defaults.CLAIMERS,
        heartbeat_interval: float = defaults.HEARTBEAT_INTERVAL,
        rescue_interval: float = defaults.RESCUE_INTERVAL,
        grace: float = defaults.GRACE,
        prefetch: int | None = None,
        poll_only: bool = False,
        listen_dsn: str | None = None,
        backoff_base: float = defaults.BACKOFF_BASE,
        backoff_cap: float = defaults.BACKOFF_CAP,
        completer_flush_interval: float = defaults.COMPLETER_FLUSH_INTERVAL,
        install_signal_handlers: bool = True,
        keep_succeeded: float = defaults.KEEP_SUCCEEDED,
        keep_failed: float = defaults.KEEP_FAILED,
        prune_interval: float = defaults.PRUNE_INTERVAL,
        burst: bool = False,
        max_jobs: int | None = None,
        max_memory: float | None = None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if isinstance(claimers, bool) or not isinstance(claimers, int) or claimers < 0:
            raise ConfigurationError(f"claimers must be an int >= 0, got {claimers!r}")
        if prefetch is not None and (
                isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0):
            raise ConfigurationError(f"prefetch must be an int >= 0 or None, got {prefetch!r}")
        self.tq = tq
        self.concurrency = concurrency
        self.queues = sorted({check_queue(q) for q in queues}) if queues else None
        self.poll_interval = _positive("poll_interval", poll_interval)
        self.lease = _positive("lease", lease)
        self.claimers = claimers
        self.heartbeat_interval = _positive("heartbeat_interval", heartbeat_interval)
        if self.heartbeat_interval >= self.lease:
            raise ConfigurationError(
                f"heartbeat_interval ({heartbeat_interval}s) must be shorter than the lease "
                f"({lease}s), or every lease would expire between two heartbeats"
            )
        self.rescue_interval = _positive("rescue_interval", rescue_interval)
        self.grace = options.check_seconds("grace", grace, zero_ok=True)
        self.prefetch = prefetch
        """Fixed prefetch, or None: adaptive, up to ``PREFETCH_MAX_PER_SLOT`` per slot."""
        self._avg_run: float | None = None  # moving average of job durations, seconds
        self.poll_only = poll_only
        self.listen_dsn = listen_dsn
        self.backoff_base = _positive("backoff_base", backoff_base)
        self.backoff_cap = _positive("backoff_cap", backoff_cap)
        self.completer_flush_interval = _positive("completer_flush_interval",
                                                  completer_flush_interval)
        self.install_signal_handlers = install_signal_handlers
        self.keep_succeeded = _positive("keep_succeeded", keep_succeeded)
        self.keep_failed = _positive("keep_failed", keep_failed)
        self.prune_interval = _positive("prune_interval", prune_interval)
        if max_jobs is not None and (
                isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 1):
            raise ConfigurationError(f"max_jobs must be an int >= 1 or None, got {max_jobs!r}")
        self.exit_rules = ExitRules(
            burst=bool(burst), max_jobs=max_jobs,
            max_memory_mib=None if max_memory is None else _positive("max_memory", max_memory),
        )
        """``burst``, ``max_jobs``, ``max_memory`` (MiB): stop by itself (``exit_rules``)."""
        self.worker_id: int | None = None

        self._stop_requested = threading.Event()
        self._interrupts = 0
        self._lock = threading.Lock()
        self._outstanding = 0  # claimed and not yet finished by a slot
        self._backlog = False  # the last claim came back full
        self._wake_sent = False  # a slot has woken the main loop to refill; not yet served
        self._timed: dict[int, HeldJob] = {}  # held jobs with a timeout (main thread only)
        self._next_deferred: float | None = None  # time.monotonic() when one comes due
        self._next_unpark: float | None = None  # same, for a parked job of our tasks
        self._last_deferred_lookup = 0.0
        self._claim_failures = 0
        self._claim_not_before = 0.0
        self._listener: Listener | None = None
        self._hints = NotificationHints()
        self._claimed_since_vacuum = 0
        self._last_vacuum = 0.0
        self._vacuuming = threading.Event()  # set while a VACUUM thread runs

    # -- public -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop gracefully (any thread; returns at once)."""
        self._stop_requested.set()
        if self._listener is not None:
            self._listener.wake()

    @property
    def application_name(self) -> str:
        """What ``pg_stat_activity`` shows for this worker's connections."""
        return f"pgtaskq worker {os.getpid()}"

    @property
    def capacity(self) -> int:
        return self.concurrency + self.prefetch_now

    @property
    def prefetch_now(self) -> int:
        """Jobs that may wait for a slot now.

        Adaptive (the default): as many as the slots start within ``PREFETCH_HORIZON`` at
        the recent average job duration, at most ``PREFETCH_MAX_PER_SLOT`` per slot, none
        until a job has finished. The buffer must outlast a claim's round trip, or the
        slots run dry while the main thread waits for it: on no-op jobs (50,000 jobs,
        concurrency 8, 2 cores) fixed prefetches of 64, 128 and 256 drained 7,015, 8,204
        and 9,223 jobs/s before the hot path was trimmed, and the adaptive 256 drains
        15,000-18,000 since; on jobs of a second it is 0, as without prefetch.
        """
        if self.prefetch is not None:
            return self.prefetch
        average = self._avg_run
        if average is None:
            return 0
        limit = PREFETCH_MAX_PER_SLOT * self.concurrency
        if average <= 0:
            return limit
        return min(limit, int(self.concurrency * PREFETCH_HORIZON / average))

    @property
    def refill_at(self) -> int:
        """Free capacity at which a worker with a backlog leases again.

        Without prefetch, every free slot is worth a lease at once. With prefetch, waiting
        until half the prefetch is free makes each claim (one commit) bring back several
        jobs instead of one, while the jobs still buffered keep the slots busy during the
        claim's round trip.
        """
        return max(1, self.prefetch_now // 2)

    def run(self) -> None:
        """Run until ``stop()``, SIGTERM or SIGINT; then shut down gracefully."""
        self.tq.check_installed()
        # A role short of a privilege used to log "ready" and fail every claim for ever.
        self.tq.check_privileges("worker")
        task_names = sorted(self.tq.tasks)
        if not task_names:
            raise ConfigurationError(
                "the TaskQueue has no tasks registered: import the modules that define "
                "them before starting the worker"
            )
        self._task_names = task_names
        self._claim_statement = render(self.tq.schema, worker_sql.CLAIM)
        self._next_due_statement = render(self.tq.schema, worker_sql.NEXT_DUE)
        conninfo = self.tq.conninfo
        # The liveness check costs a round trip only for a connection that looks dead or
        # sat idle: psycopg_pool's check_connection sent an empty query before every claim
        # and every completer flush, one extra round trip on the worker's hot path.
        forking.worker_started()
        self._pool = open_pool(
            conninfo, min_size=2, max_size=4, name="pgtaskq-worker",
            liveness=LivenessCheck(),
            **self.tq.connection_kwargs(application_name=self.application_name),
        )
        try:
            with contextlib.suppress(PoolTimeout):
                # every connection of min_size made (and known to pgtaskq.forking) before
                # the first job: a task forking meanwhile would see one half-made
                self._pool.wait(timeout=30)
            self._run_with_pool(conninfo)
        finally:
            self._pool.close()
            forking.worker_stopped()

    # -- life cycle ---------------------------------------------------------------------

    def _run_with_pool(self, conninfo: str) -> None:
        schema = self.tq.schema
        with self._pool.connection(timeout=30) as conn:
            row = conn.execute(render(schema, worker_sql.REGISTER_WORKER), {
                "host": socket.gethostname(), "pid": os.getpid(), "queues": self.queues,
                "concurrency": self.concurrency, "version": __version__,
                "heartbeat_interval": self.heartbeat_interval,
            }).fetchone()
        assert row is not None
        self.worker_id = worker_id = int(row[0])
        self._publish_tasks()
        self._held = HeldJobs()
        self._completer = Completer(
            self._pool, schema, worker_id, self._held,
            flush_interval=self.completer_flush_interval,
            backoff_base=self.backoff_base, backoff_cap=self.backoff_cap,
            on_requeued=self._note_deferred,
        )
        self._slots = Slots(self.concurrency, self._resolve, self.tq.job_middlewares,
                            self._on_outcome, self.tq.job_hooks)
        self._heartbeat = Heartbeat(
            self._pool, schema, worker_id, self._held, interval=self.heartbeat_interval,
            lease=self.lease, busy_slots=lambda: self._slots.busy,
        )
        self._parker = Parker(self._pool, schema, interval=self.rescue_interval,
                              vacuum=lambda: self._vacuum_jobs(after_parking=True))
        self._rescuer = Rescuer(self._pool, schema, self.tq.channel,
                                interval=self.rescue_interval)
        self._pruner = Pruner(self._pool, schema, keep_succeeded=self.keep_succeeded,
                              keep_failed=self.keep_failed, interval=self.prune_interval)
        listen_conninfo = None if self.poll_only else (
            embedded.resolve(self.listen_dsn) if self.listen_dsn else conninfo)
        self._listener = Listener(
            listen_conninfo, self.tq.channel,
            connect_kwargs=self.tq.connection_kwargs(application_name=self.application_name))
        self._timers = self._make_timers()
        previous_handlers = self._install_signal_handlers()
        try:
            self._completer.start()
            self._slots.start()
            self._heartbeat.start()
            self._rescuer.start()
            self._unpark_due()
            self._parker.start()
            self._pruner.start()
            if listen_conninfo is not None:
                self._listener.connect()
            systemd.notify("READY=1\nSTATUS=processing jobs")
            log.info("worker %d ready: pid %d, concurrency %d, queues %s, %d tasks, %s",
                     worker_id, os.getpid(), self.concurrency,
                     ",".join(self.queues) if self.queues else "all", len(self._task_names),
                     "poll-only" if self.poll_only else
                     ("listening" if self._listener.listening else "polling (LISTEN failed)"))
            self._loop()
        finally:
            try:
                self._shutdown()
            finally:
                self._restore_signal_handlers(previous_handlers)
                self._listener.close()

    def _publish_tasks(self) -> None:
        """Publish this worker's tasks and their declared options (``worker_tasks``), so
        that enqueue by name from a process without the task uses them."""
        tasks = [self.tq.tasks[name] for name in self._task_names]
        with self._pool.connection(timeout=30) as conn:
            conn.execute(render(self.tq.schema, worker_sql.PUBLISH_TASKS), {
                "worker_id": self.worker_id, "tasks": [t.name for t in tasks],
                "queues": [t.queue for t in tasks], "priorities": [t.priority for t in tasks],
                "max_attempts": [t.max_attempts for t in tasks],
                "timeouts": [t.timeout for t in tasks],
            })

    def _make_timers(self) -> list[LoopTimer]:
        """Timers the main loop serves: the cron scheduler, when the app has schedules."""
        if not self.tq.schedules:
            return []
        return [CronScheduler(self._pool, self.tq.schema, self.tq.channel, self.tq.schedules)]

    def _run_timers(self) -> None:
        for timer in self._timers:
            try:
                due = timer.seconds_until_due()
                if due is not None and due <= 0:
                    timer.run_due()
            except Exception as exc:
                log.warning("%s failed: %s", type(timer).__name__,
                            first_line(exc))

    def _shutdown(self) -> None:
        systemd.notify("STOPPING=1")
        log.info("worker %s stopping: %d jobs running, grace %.0fs", self.worker_id,
                 self._slots.busy, self.grace)
        waiting = self._slots.take_waiting()
        self._hand_back(waiting, delay=0.0)
        self._slots.stop()
        if not self._slots.join(self.grace):
            unfinished = [job for job in self._held
                          if not job.finished and job.running_since is not None]
            outlived = [job for job in unfinished if forking.live_children(job.id)]
            if outlived:
                log.warning("grace period over: %d running jobs forked processes that are "
                            "still alive; their attempts stay charged: %s", len(outlived),
                            ", ".join(str(job.id) for job in outlived))
                self._hand_back(outlived, delay=HAND_BACK_DELAY, charged=True)
            unfinished = [job for job in unfinished if job not in outlived]
            if unfinished:
                log.warning("grace period over: handing back %d running jobs: %s",
                            len(unfinished), ", ".join(str(job.id) for job in unfinished))
                self._hand_back(unfinished, delay=HAND_BACK_DELAY)
        if not self._completer.flush_and_stop(timeout=max(10.0, self.lease / 2)):
            log.warning("could not write every job outcome before exiting; those jobs "
                        "will run again when their lease expires")
        self._heartbeat.stop()
        self._rescuer.stop()
        self._parker.stop()
        self._pruner.stop()
        try:
            with self._pool.connection(timeout=5) as conn:
                conn.execute(render(self.tq.schema, worker_sql.WORKER_STOPPED),
                             {"worker_id": self.worker_id})
        except Exception as exc:
            log.warning("could not mark worker %s stopped: %s", self.worker_id, exc)
        log.info("worker %s stopped", self.worker_id)

    def _hand_back(self, jobs: list[HeldJob], delay: float, charged: bool = False) -> None:
        """Give ``jobs`` back to the queue, their attempt not charged; ``charged``: keep
        it charged (``HAND_BACK_CHARGED``: their process tree outlived the shutdown)."""
        if not jobs:
            return
        params: dict[str, Any] = {
            "worker_id": self.worker_id, "ids": [j.id for j in jobs],
            "attempts": [j.attempt for j in jobs], "delay": delay,
            "channel": self.tq.channel,
        }
        statement = worker_sql.HAND_BACK
        if charged:
            statement = worker_sql.HAND_BACK_CHARGED
            params = {**params, "error": "its worker shut down while processes forked by "
                                         "the task were still running"}
            del params["channel"]
        for attempt in range(5):
            try:
                # as the completer does: the heartbeat must not take these for lost leases
                with self._held.settling:
                    with self._pool.connection(timeout=5) as conn:
                        conn.execute(render(self.tq.schema, statement), params)
                    self._held.release_all([(job.id, job.attempt) for job in jobs])
                break
            except Exception as exc:
                log.warning("hand back of %d jobs failed (attempt %d): %s", len(jobs),
                            attempt + 1, exc)
                time.sleep(0.2 * 2**attempt)
        self._held.release_all([(job.id, job.attempt) for job in jobs])

    # -- signals ------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any]:
        if not self.install_signal_handlers or \
                threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _restore_signal_handlers(self, previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only flags and one write to the pipe: logging here could deadlock.
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts > 1:
                os._exit(130)
        self._stop_requested.set()
        if self._listener is not None:
            self._listener.wake()

    # -- main loop ----------------------------------------------------------------------

    def _loop(self) -> None:
        listener = self._listener
        assert listener is not None
        claim_now = True
        claim_by_notification = False
        next_poll = time.monotonic() + self.poll_interval
        watchdog = systemd.watchdog_interval()
        next_watchdog = time.monotonic() if watchdog else None
        while not self._stop_requested.is_set():
            now = time.monotonic()
            if next_watchdog is not None and watchdog and now >= next_watchdog:
                systemd.notify("WATCHDOG=1")
                next_watchdog = now + watchdog
            if claim_now and now >= self._claim_not_before:
                found = self._claim()
                self._hints.claimed(time.monotonic(), found, claim_by_notification)
                next_poll = time.monotonic() + self.poll_interval
                claim_now = False
            if self.exit_rules.active and self._should_exit():
                break
            # Jobs that finished during the claim may already have freed enough capacity
            # for the next one: then do not sleep (their wake-up may have been coalesced).
            # (Not while a failed claim backs off: _timeout() waits for that.)
            refill_now = self._refill_due() and time.monotonic() >= self._claim_not_before
            timeout = 0.0 if refill_now else self._timeout(next_poll, next_watchdog)
            events = listener.wait(timeout)
            with self._lock:
                self._wake_sent = False
            now = time.monotonic()
            self._apply_cancels(events)
            self._enforce_timeouts(now)
            self._run_timers()
            polled = now >= next_poll
            if polled:
                self._poll_cancel_requests()
                self._lookup_deferred(force=True)
                next_poll = now + self.poll_interval
            # A notification is a hint (pgtaskq.worker.hints): rate-limited, never proof of work.
            notified = ((self._wanted(events) and self._hints.notified(now))
                        or self._hints.pending_claim_due(now))
            other_reason = (
                polled or events.reconnected
                or (self._next_deferred is not None and time.monotonic() >= self._next_deferred)
            )
            work_signalled = other_reason or notified
            room = self._room() > 0
            if work_signalled and not room:
                # Full now (capacity can shrink without a full claim: adaptive prefetch,
                # unacknowledged outcomes): remember the work, so the slot that frees
                # room wakes the loop instead of the job waiting for the next poll.
                with self._lock:
                    self._backlog = True
            refill = self._refill_due()
            claim_now = room and (work_signalled or refill)
            claim_by_notification = claim_now and notified and not (other_reason or refill)
            if self.exit_rules.needs_idle_claim(self._held_count()):
                claim_now = True

    def _held_count(self) -> int:
        with self._lock:
            return self._outstanding

    def _should_exit(self) -> bool:
        """An exit rule holds: stop gracefully, as on SIGTERM (exit status 0)."""
        reason = self.exit_rules.reason_to_stop(self._held_count())
        if reason is None:
            return False
        log.info("worker %s stopping by itself (%s)", self.worker_id, reason)
        self._stop_requested.set()
        return True

    def _refill_due(self) -> bool:
        """The last claim came back full and enough capacity is free to lease again."""
        with self._lock:
            if not self._backlog:
                return False
        return self._room() >= self.refill_at

    def _room(self) -> int:
        """Jobs this worker may lease now: its free capacity, less what the completer is
        behind by beyond ``MAX_UNACKNOWLEDGED`` (held jobs include finished, unwritten ones).
        """
        with self._lock:
            outstanding = self._outstanding
        unacknowledged = len(self._held) - outstanding
        return self.capacity - outstanding - max(0, unacknowledged - MAX_UNACKNOWLEDGED)

    def _timeout(self, next_poll: float, next_watchdog: float | None) -> float:
        now = time.monotonic()
        deadlines = [next_poll]
        if next_watchdog is not None:
            deadlines.append(next_watchdog)
        if self._next_deferred is not None and self._free() > 0:
            # never before a failed claim's backoff ends (a due deferred job would spin)
            deadlines.append(max(now, self._next_deferred, self._claim_not_before))
        deadlines.extend(d for d in (j.deadline for j in self._timed_jobs()) if d is not None)
        for timer in self._timers:
            due = timer.seconds_until_due()
            if due is not None:
                deadlines.append(now + max(0.0, due))
        if self._claim_not_before > now:
            deadlines.append(self._claim_not_before)
        if self._backlog and self._free() >= self.refill_at > self._room():
            # Waiting for the completer, which does not wake the loop: look again soon.
            deadlines.append(now + self.completer_flush_interval)
        hinted = self._hints.deadline()
        if hinted is not None:
            deadlines.append(hinted)
        reconnect = self._listener.seconds_to_reconnect() if self._listener else None
        if reconnect is not None:
            deadlines.append(now + reconnect)
        return max(0.0, min(deadlines) - now)

    def _wanted(self, events: Events) -> bool:
        if not events.queues:
            return False
        return self.queues is None or not events.queues.isdisjoint(self.queues)

    def _free(self) -> int:
        with self._lock:
            return self.capacity - self._outstanding

    def _claim(self) -> int:
        """Lease jobs for the free room; return how many came back."""
        limit = self.exit_rules.cap(self._room())
        if limit <= 0:
            return 0
        held_before = self._held_count()
        if self._next_unpark is not None and time.monotonic() >= self._next_unpark:
            self._unpark_due()
        claim_started = time.monotonic()
        params = {"worker_id": self.worker_id, "tasks": self._task_names, "limit": limit,
                  "lease": self.lease, "queues": self.queues, "claimers": self.claimers}
        try:
            with self._pool.connection(timeout=5) as conn:
                cursor = conn.cursor()
                # args and kwargs as JSON text, decoded job by job below: psycopg's jsonb
                # loader raising for one job lost the leases of the whole batch
                cursor.adapters.register_loader("jsonb", TextLoader)
                rows = cursor.execute(self._claim_statement, params).fetchall()
        except Exception as exc:
            self._claim_failures += 1
            pause = min(CLAIM_ERROR_BACKOFF_MAX, 0.1 * 2**self._claim_failures)
            self._claim_not_before = time.monotonic() + pause
            log.warning("leasing jobs failed (attempt %d, next in %.1fs): %s",
                        self._claim_failures, pause,
                        first_line(exc))
            return 0
        if self._claim_failures:
            log.info("leasing jobs works again")
        if time.monotonic() - claim_started > SLOW_CLAIM:
            self._parker.nudge()  # maybe walking jobs it cannot take: park them
        self._claim_failures = 0
        with self._lock:
            self._outstanding += len(rows)
            self._backlog = len(rows) == limit
        self.exit_rules.claimed(len(rows), held_before)
        self._claimed_since_vacuum += len(rows)
        if self._claimed_since_vacuum >= VACUUM_AFTER_CLAIMS:
            self._vacuum_jobs()
        tasks = self.tq.tasks
        worker_id = self.worker_id
        submit = self._slots.submit
        add = self._held.add
        loads = json.loads
        # rows come in claim order: the slots start them in this order
        for job_id, task, queue, args_text, kwargs_text, _priority, attempt, max_attempts, \
                wait_ms in rows:
            registered = tasks.get(task)
            held = HeldJob(
                job_id, task, queue, [], {}, attempt, max_attempts, wait_ms,
                JobContext(job_id, task, queue, attempt, max_attempts, worker_id),
                registered.timeout if registered is not None else None,
            )
            add(held)
            # Each job is decoded on its own: one that Python's json refuses (jsonb took
            # it) fails alone, at once and for good, and the rest of the batch runs.
            try:
                held.args = loads(args_text)
                if kwargs_text is not None:
                    held.kwargs = loads(kwargs_text)
            except (ValueError, RecursionError) as exc:
                self._fail_for_good(held, _undecodable_message(args_text, kwargs_text, exc))
                continue
            if registered is None:
                self._fail_for_good(held, f"LookupError: task {task!r} is not registered in "
                                          f"worker {worker_id}")
                continue
            if held.timeout is not None:
                self._timed[job_id] = held
            submit(held)
        if len(rows) < limit:
            # A due deferred job the claim did not return (another queue's, or taken by
            # another worker) must be forgotten now, or the loop would spin until the
            # rate-limited look-up runs again.
            self._lookup_deferred(force=self._next_deferred is not None
                                  and self._next_deferred <= time.monotonic())
        return len(rows)

    def _fail_for_good(self, job: HeldJob, error: str) -> None:
        """End a leased job that cannot run here as ``failed``, with no retry: decoding
        and task look-up would fail the same way at every attempt."""
        log.error("job %d (%s) failed for good: %s", job.id, job.task[:200],
                  error.splitlines()[0][:300])
        job.finished = True
        self._completer.add(Outcome.discarded(job, error))
        with self._lock:
            self._outstanding -= 1

    def _vacuum_jobs(self, after_parking: bool = False) -> None:
        """Start ``VACUUM (SKIP_LOCKED)`` of the jobs table in a thread of its own (it may
        take a second on a big table; the main loop never waits for it)."""
        now = time.monotonic()
        if self._vacuuming.is_set() or (
                not after_parking and now - self._last_vacuum < VACUUM_MIN_INTERVAL):
            return
        self._claimed_since_vacuum = 0
        self._last_vacuum = now
        self._vacuuming.set()
        # After parking, the parked rows' old entries must go, or every claim steps over
        # them: wait for a running autovacuum (it is cancelled for us) rather than skip.
        statement = sql.SQL("VACUUM {}{}.jobs").format(
            sql.SQL("" if after_parking else "(SKIP_LOCKED) "), sql.Identifier(self.tq.schema))

        def run() -> None:
            try:
                kwargs = {"connect_timeout": 5, **self.tq.connection_kwargs(
                    application_name=self.application_name)}
                with psycopg.connect(self.tq.conninfo, autocommit=True, **kwargs) as conn:
                    conn.execute(statement)
            except Exception as exc:  # maintenance only: the next one may work
                log.debug("VACUUM of the jobs table failed: %s", exc)
            finally:
                self._vacuuming.clear()

        threading.Thread(target=run, name="pgtaskq-vacuum", daemon=True).start()

    def _lookup_deferred(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_deferred_lookup < DEFERRED_LOOKUP_MIN_INTERVAL:
            return
        self._last_deferred_lookup = now
        try:
            with self._pool.connection(timeout=5) as conn:
                row = conn.execute(self._next_due_statement,
                                   {"tasks": self._task_names}).fetchone()
        except Exception as exc:
            log.debug("next deferred job look-up failed: %s", exc)
            return
        deferred, unpark = row if row else (None, None)
        now = time.monotonic()
        self._next_unpark = now + max(0.0, unpark) if unpark is not None else None
        due = [now + max(0.0, s) for s in (deferred, unpark) if s is not None]
        self._next_deferred = min(due) if due else None

    def _unpark_due(self) -> None:
        """Put the due parked jobs of this worker's tasks back in the ready indexes (at
        start: the jobs of a task no worker ran until now; later: parked future jobs)."""
        self._next_unpark = None
        try:
            with self._pool.connection(timeout=5) as conn:
                while True:
                    row = conn.execute(render(self.tq.schema, registry_sql.UNPARK), {
                        "tasks": self._task_names, "limit": UNPARK_BATCH,
                        "channel": self.tq.channel}).fetchone()
                    if row is None or row[0] < UNPARK_BATCH:
                        break
        except Exception as exc:
            log.warning("taking back parked jobs failed: %s", first_line(exc))
            self._next_unpark = time.monotonic() + self.poll_interval

    def _note_deferred(self, seconds_until: float) -> None:
        """Called by the completer when it requeued a job (a retry) due in ``seconds_until``
        (measured on the database's clock, so the hosts' clocks may disagree freely)."""
        due = time.monotonic() + max(0.0, seconds_until)
        with self._lock:
            if self._next_deferred is None or due < self._next_deferred:
                self._next_deferred = due
        if seconds_until <= self.poll_interval and self._listener is not None:
            self._listener.wake()

    def _resolve(self, task_name: str) -> Any:
        task = self.tq.tasks.get(task_name)
        return task.func if task is not None else None

    def _on_outcome(self, job: HeldJob, outcome: Outcome) -> None:
        self._completer.add(outcome)
        forking.forget(job.id)
        seconds = outcome.run_ms / 1000
        with self._lock:
            average = self._avg_run
            self._avg_run = seconds if average is None else 0.9 * average + 0.1 * seconds
            self._outstanding -= 1
            # One wake-up per refill, not one per finished job: a pipe write and a loop
            # iteration per job were a large share of the worker's time on short jobs.
            wake = (self._backlog and not self._wake_sent
                    and self.capacity - self._outstanding >= self.refill_at)
            if wake:
                self._wake_sent = True
            held_now = self._outstanding
        if self.exit_rules.active and self.exit_rules.finished(held_now):
            wake = True
        if wake and self._listener is not None:
            self._listener.wake()

    def _apply_cancels(self, events: Events) -> None:
        """Cancel notifications only name jobs to look up: anyone may NOTIFY (hints.py)."""
        hinted = set()
        for job_id, worker_id in events.cancels:
            job = self._held.get(job_id) if worker_id == self.worker_id else None
            if job is not None and not job.finished and not job.context.cancel_requested:
                hinted.add(job_id)
        if hinted:
            self._hints.hint_cancel(hinted)
        due = self._hints.cancels_to_check(time.monotonic())
        if due:
            self._poll_cancel_requests(due)

    def _poll_cancel_requests(self, only: set[int] | None = None) -> None:
        """Ask the database which held jobs really have ``cancel_requested``; cancel those."""
        running = [job for job in self._held if not job.finished
                   and (only is None or job.id in only)]
        if not running:
            return
        try:
            with self._pool.connection(timeout=5) as conn:
                rows = conn.execute(render(self.tq.schema, worker_sql.CANCEL_REQUESTED), {
                    "ids": [job.id for job in running], "worker_id": self.worker_id,
                }).fetchall()
        except Exception as exc:
            log.debug("cancel poll failed: %s", exc)
            return
        for (job_id,) in rows:
            job = self._held.get(job_id)
            if job is not None and not job.context.cancel_requested:
                log.info("job %d (%s): cancel requested", job.id, job.task)
                job.context.request_cancel()

    def _timed_jobs(self) -> list[HeldJob]:
        """Held jobs that have a timeout, forgetting finished ones.

        Most tasks have no timeout; looking only at those that do keeps the main loop's
        per-iteration work independent of how many jobs are held.
        """
        if not self._timed:
            return []
        for job_id in [i for i, j in self._timed.items() if j.finished]:
            del self._timed[job_id]
        return list(self._timed.values())

    def _enforce_timeouts(self, now: float) -> None:
        for job in self._timed_jobs():
            deadline = job.deadline
            if deadline is not None and now >= deadline and not job.context.timed_out:
                job.context.timed_out = True
                job.context.request_cancel()
                log.warning("job %d (%s) exceeded its timeout of %ss; its cancel event is "
                            "set and the attempt will count as failed. Its slot stays busy "
                            "until the function returns", job.id, job.task, job.timeout)
