"""The worker process's life: set up, run the main loop, shut down gracefully.

Top to bottom (``Worker.run``): check the schema, register in the workers table, publish
the tasks, start the completer, slots, heartbeat, rescuer, parker and pruner threads,
LISTEN, tell systemd READY, run the main loop (``pgtaskq.worker.loop``, which claims
through ``pgtaskq.worker.claimer``), and on the way out hand back what will not be
finished.

Invariants:
- no transaction stays open while a job runs: the lease is a committed UPDATE;
- a job runs in at most one slot anywhere at a time, as long as heartbeats reach the
  database within the lease; a timed-out job keeps its slot and its lease until its
  function returns;
- every outcome is written, or the job's lease expires and it runs again (at-least-once).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from psycopg_pool import PoolTimeout

from pgtaskq import defaults, embedded, forking, options
from pgtaskq._version import __version__
from pgtaskq.errors import ConfigurationError
from pgtaskq.options import check_queue
from pgtaskq.pool import LivenessCheck, open_pool
from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql
from pgtaskq.worker import systemd
from pgtaskq.worker.cancels import Cancels
from pgtaskq.worker.capacity import Capacity
from pgtaskq.worker.claimer import Claimer
from pgtaskq.worker.completer import Completer
from pgtaskq.worker.due import DueTimes
from pgtaskq.worker.exit_rules import ExitRules
from pgtaskq.worker.heartbeat import Heartbeat
from pgtaskq.worker.held import HeldJob, HeldJobs
from pgtaskq.worker.hints import NotificationHints
from pgtaskq.worker.listener import Listener
from pgtaskq.worker.loop import LoopTimer, MainLoop
from pgtaskq.worker.parker import Parker
from pgtaskq.worker.pruner import Pruner
from pgtaskq.worker.rescuer import Rescuer
from pgtaskq.worker.scheduler import CronScheduler
from pgtaskq.worker.slots import Slots
from pgtaskq.worker.timeouts import Timeouts
from pgtaskq.worker.vacuum import JobsVacuum

if TYPE_CHECKING:
    from pgtaskq.queue import TaskQueue

log = logging.getLogger("pgtaskq.worker")

HAND_BACK_DELAY = 1.0
"""Jobs still running at the end of the grace period go back with this delay, so no other
worker starts them while this process's threads may still be inside them."""


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
        """Fixed prefetch, or None: adaptive (``pgtaskq.worker.capacity``)."""
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
        self._listener: Listener | None = None

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
        schema, tq = self.tq.schema, self.tq
        with self._pool.connection(timeout=30) as conn:
            row = conn.execute(render(schema, worker_sql.REGISTER_WORKER), {
                "host": socket.gethostname(), "pid": os.getpid(), "queues": self.queues,
                "concurrency": self.concurrency, "version": __version__,
                "heartbeat_interval": self.heartbeat_interval,
            }).fetchone()
        assert row is not None
        self.worker_id = worker_id = int(row[0])
        self._publish_tasks()
        connect_kwargs = tq.connection_kwargs(application_name=self.application_name)
        listen_conninfo = None if self.poll_only else (
            embedded.resolve(self.listen_dsn) if self.listen_dsn else conninfo)
        self._listener = listener = Listener(listen_conninfo, tq.channel,
                                             connect_kwargs=connect_kwargs)
        self._held = held = HeldJobs()
        capacity = Capacity(
            self.concurrency, self.prefetch, held=held.__len__,
            on_finished=self.exit_rules.finished if self.exit_rules.active else None)
        due = DueTimes(self._pool, schema, tq.channel, self._task_names,
                       poll_interval=self.poll_interval, wake=listener.wake)
        self._completer = completer = Completer(
            self._pool, schema, worker_id, held,
            flush_interval=self.completer_flush_interval,
            backoff_base=self.backoff_base, backoff_cap=self.backoff_cap,
            on_requeued=due.requeued,
        )
        self._slots = slots = Slots(self.concurrency, tq.job_middlewares, tq.job_hooks,
                                    completer=completer, capacity=capacity,
                                    wake=listener.wake)
        vacuum = JobsVacuum(tq.conninfo, schema, connect_kwargs)
        self._threads = threads = [
            Heartbeat(self._pool, schema, worker_id, held, interval=self.heartbeat_interval,
                      lease=self.lease, busy_slots=lambda: slots.busy),
            Rescuer(self._pool, schema, tq.channel, interval=self.rescue_interval),
            parker := Parker(self._pool, schema, interval=self.rescue_interval,
                             vacuum=vacuum.after_parking),
            Pruner(self._pool, schema, keep_succeeded=self.keep_succeeded,
                   keep_failed=self.keep_failed, interval=self.prune_interval),
        ]
        hints = NotificationHints()
        timeouts = Timeouts()
        loop = MainLoop(
            worker_id=worker_id, queues=self.queues, poll_interval=self.poll_interval,
            completer_flush_interval=self.completer_flush_interval,
            stop=self._stop_requested, listener=listener, hints=hints, capacity=capacity,
            claimer=Claimer(
                self._pool, tq, worker_id, tasks=self._task_names, queues=self.queues,
                lease=self.lease, claimers=self.claimers, capacity=capacity, held=held,
                slots=slots, completer=completer, exit_rules=self.exit_rules, due=due,
                timeouts=timeouts, parker=parker, vacuum=vacuum),
            due=due, cancels=Cancels(self._pool, schema, worker_id, held, hints),
            timeouts=timeouts, exit_rules=self.exit_rules, timers=self._make_timers(),
        )
        previous_handlers = self._install_signal_handlers()
        try:
            completer.start()
            slots.start()
            for thread in threads:
                if thread is parker:
                    due.unpark()  # before the parker's first look: nothing parked twice
                thread.start()
            if listen_conninfo is not None:
                listener.connect()
            systemd.notify("READY=1\nSTATUS=processing jobs")
            log.info("worker %d ready: pid %d, concurrency %d, queues %s, %d tasks, %s",
                     worker_id, os.getpid(), self.concurrency,
                     ",".join(self.queues) if self.queues else "all", len(self._task_names),
                     "poll-only" if self.poll_only else
                     ("listening" if listener.listening else "polling (LISTEN failed)"))
            loop.run()
        finally:
            try:
                self._shutdown()
            finally:
                self._restore_signal_handlers(previous_handlers)
                listener.close()

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
        for thread in self._threads:
            thread.stop()
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
