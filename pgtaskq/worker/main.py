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
  function returns (threads) or its child process is gone (``pool="process"``:
  ``process_pool`` stops it);
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

from pgtaskq import embedded, forking
from pgtaskq._version import __version__
from pgtaskq.backoff import Backoff
from pgtaskq.errors import ConfigurationError
from pgtaskq.pool import LivenessCheck, open_pool
from pgtaskq.sql import worker as worker_sql
from pgtaskq.worker import systemd
from pgtaskq.worker.cancels import Cancels
from pgtaskq.worker.capacity import Capacity
from pgtaskq.worker.claimer import Claimer
from pgtaskq.worker.completer import Completer
from pgtaskq.worker.config import WorkerConfig
from pgtaskq.worker.database import Statements
from pgtaskq.worker.due import DueTimes
from pgtaskq.worker.exit_rules import ExitRules
from pgtaskq.worker.heartbeat import Heartbeat
from pgtaskq.worker.held import HeldJob, HeldJobs
from pgtaskq.worker.hints import NotificationHints
from pgtaskq.worker.listener import Listener
from pgtaskq.worker.loop import LoopTimer, MainLoop
from pgtaskq.worker.parker import Parker
from pgtaskq.worker.process_pool import ProcessSlots
from pgtaskq.worker.pruner import Pruner
from pgtaskq.worker.rescuer import Rescuer
from pgtaskq.worker.scheduler import CronScheduler
from pgtaskq.worker.slots import Slots
from pgtaskq.worker.timeouts import Timeouts
from pgtaskq.worker.vacuum import JobsVacuum
from pgtaskq.worker.waiting import Waiting

if TYPE_CHECKING:
    from pgtaskq.queue import TaskQueue

log = logging.getLogger("pgtaskq.worker")

HAND_BACK_DELAY = 1.0
"""Jobs still running at the end of the grace period go back with this delay, so no other
worker starts them while this process's threads may still be inside them."""


class Worker:
    """Runs the jobs of a TaskQueue: ``Worker(tq, concurrency=8).run()``.

    Its settings are ``WorkerConfig``'s fields, given as keyword arguments (or as
    ``config=``, which keyword arguments then override); they are checked here, before
    anything connects, and readable as ``worker.config``.
    """

    def __init__(self, tq: TaskQueue, concurrency: int | None = None,
                 queues: list[str] | tuple[str, ...] | None = None, *,
                 config: WorkerConfig | None = None, **settings: Any) -> None:
        if concurrency is not None:
            settings["concurrency"] = concurrency
        if queues is not None:
            settings["queues"] = queues
        self.tq = tq
        self.config = config.replace(**settings) if config else WorkerConfig(**settings)
        self.exit_rules = ExitRules(burst=self.config.burst, max_jobs=self.config.max_jobs,
                                    max_memory_mib=self.config.max_memory)
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
        schema, tq, config = self.tq.schema, self.tq, self.config
        self._db = Statements(self._pool, schema)
        row = self._db.fetchone(worker_sql.REGISTER_WORKER, {
            "host": socket.gethostname(), "pid": os.getpid(), "queues": config.queues,
            "concurrency": config.concurrency, "version": __version__,
            "heartbeat_interval": config.heartbeat_interval,
        }, timeout=30)
        assert row is not None
        self.worker_id = worker_id = int(row.id)
        self._publish_tasks()
        connect_kwargs = tq.connection_kwargs(application_name=self.application_name)
        listen_conninfo = None if config.poll_only else (
            embedded.resolve(config.listen_dsn) if config.listen_dsn else conninfo)
        self._listener = listener = Listener(listen_conninfo, tq.channel,
                                             connect_kwargs=connect_kwargs)
        self._held = held = HeldJobs()
        capacity = Capacity(
            config.concurrency, config.prefetch, held=held.__len__,
            max_unacknowledged=2 * config.completer_batch_size,
            on_finished=self.exit_rules.finished if self.exit_rules.active else None)
        due = DueTimes(self._pool, schema, tq.channel, self._task_names,
                       poll_interval=config.poll_interval, wake=listener.wake)
        self._completer = completer = Completer(
            self._pool, schema, worker_id, held,
            flush_interval=config.completer_flush_interval,
            batch_size=config.completer_batch_size,
            backoff_base=config.backoff_base, backoff_cap=config.backoff_cap,
            on_requeued=due.requeued,
        )
        slots: Slots | ProcessSlots
        if config.pool == "process":  # one child process per slot
            slots = ProcessSlots(config, tq, completer=completer, capacity=capacity,
                                 wake=listener.wake)
        else:
            slots = Slots(config.concurrency, tq.job_middlewares, tq.job_hooks,
                          completer=completer, capacity=capacity, wake=listener.wake)
        self._slots = slots
        vacuum = JobsVacuum(tq.conninfo, schema, connect_kwargs)
        self._threads = threads = [
            Heartbeat(self._pool, schema, worker_id, held, interval=config.heartbeat_interval,
                      lease=config.lease, busy_slots=lambda: slots.busy),
            Rescuer(self._pool, schema, tq.channel, interval=config.rescue_interval),
            parker := Parker(self._pool, schema, interval=config.rescue_interval,
                             vacuum=vacuum.after_parking),
            Pruner(self._pool, schema, keep_succeeded=config.keep_succeeded,
                   keep_failed=config.keep_failed, keep_stats=config.keep_stats,
                   interval=config.prune_interval, batch=config.prune_batch),
        ]
        hints = NotificationHints()
        timeouts = Timeouts(kill_grace=config.kill_grace if config.pool == "process"
                            else None)
        timers = self._make_timers()
        waiting = Waiting(self._db, worker_id, max_backoff=config.poll_interval,
                          listening=lambda: listener.listening)
        loop = MainLoop(
            worker_id=worker_id, queues=config.queues, poll_interval=config.poll_interval,
            completer_flush_interval=config.completer_flush_interval,
            stop=self._stop_requested, listener=listener, hints=hints, capacity=capacity,
            claimer=Claimer(
                self._pool, tq, worker_id, tasks=self._task_names, queues=config.queues,
                lease=config.lease, claimers=config.claimers, capacity=capacity, held=held,
                slots=slots, completer=completer, exit_rules=self.exit_rules, due=due,
                timeouts=timeouts, parker=parker, vacuum=vacuum, waiting=waiting),
            due=due, cancels=Cancels(self._pool, schema, worker_id, held, hints),
            timeouts=timeouts, exit_rules=self.exit_rules, timers=timers,
            waiting=waiting,
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
            for timer in timers:
                # the cron scheduler's first run registers the schedules: once "ready" is
                # logged, `pgtaskq schedules` shows them (a failure backs off and retries)
                timer.run_due()
            systemd.notify("READY=1\nSTATUS=processing jobs")
            log.info("worker %d ready: pid %d, concurrency %d, queues %s, %d tasks, %s",
                     worker_id, os.getpid(), config.concurrency,
                     ",".join(config.queues) if config.queues else "all", len(self._task_names),
                     "poll-only" if config.poll_only else
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
        self._db.execute(worker_sql.PUBLISH_TASKS, {
            "worker_id": self.worker_id, "tasks": [t.name for t in tasks],
            "queues": [t.queue for t in tasks], "priorities": [t.priority for t in tasks],
            "max_attempts": [t.max_attempts for t in tasks],
            "timeouts": [t.timeout for t in tasks],
        }, timeout=30)

    def _make_timers(self) -> list[LoopTimer]:
        """Timers the main loop serves: the cron scheduler, when the app has schedules."""
        if not self.tq.schedules:
            return []
        return [CronScheduler(self._pool, self.tq.schema, self.tq.channel, self.tq.schedules)]

    def _shutdown(self) -> None:
        systemd.notify("STOPPING=1")
        log.info("worker %s stopping: %d jobs running, grace %.0fs", self.worker_id,
                 self._slots.busy, self.config.grace)
        waiting = self._slots.take_waiting()
        self._hand_back(waiting, delay=0.0)
        self._slots.stop()
        if not self._slots.join(self.config.grace):
            # child processes are stopped before their jobs are handed back: a job never
            # runs here and elsewhere at once
            if isinstance(self._slots, ProcessSlots) and not self._slots.abandon(5.0):
                log.warning("grace period over: some child processes did not exit")
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
        if not self._completer.flush_and_stop(timeout=max(10.0, self.config.lease / 2)):
            log.warning("could not write every job outcome before exiting; those jobs "
                        "will run again when their lease expires")
        for thread in self._threads:
            thread.stop()
        try:
            self._db.execute(worker_sql.WORKER_STOPPED, {"worker_id": self.worker_id})
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
        backoff = Backoff(0.2, 5.0)
        for attempt in range(5):
            try:
                # as the completer does: the heartbeat must not take these for lost leases
                with self._held.settling:
                    self._db.execute(statement, params)
                    self._held.release_all([(job.id, job.attempt) for job in jobs])
                break
            except Exception as exc:
                log.warning("hand back of %d jobs failed (attempt %d): %s", len(jobs),
                            attempt + 1, exc)
                time.sleep(backoff.failed())
        self._held.release_all([(job.id, job.attempt) for job in jobs])

    # -- signals ------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any]:
        if not self.config.install_signal_handlers or \
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
