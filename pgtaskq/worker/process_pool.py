"""Process slots (``--pool process``): each slot is a child process that runs its jobs.

Python threads cannot be stopped, cannot survive a segfault, and share one GIL. With the
process pool each slot is one child process that lives across jobs (no fork per job) and
is handed one job at a time; everything that talks to PostgreSQL (leasing, heartbeats,
outcomes, cancel requests) stays in the worker process. So the worker can:

- **stop a job at its timeout**: the cancel event is set in the child at ``timeout``
  (the main loop does it, as with threads); a job still running ``kill_grace`` seconds
  later (``defaults.KILL_GRACE``, 2 s) has its process group sent SIGTERM, and SIGKILL
  ``TERM_TO_KILL`` (0.5 s) later. The attempt fails with ``TimeoutError`` (retried as any
  failure) and the slot forks a fresh child. The lease is held, and heartbeated, until
  the child is reaped: the job never runs twice at once.
- **force a cancel**: a task declared ``@tq.task(force_cancel=True)`` gets the same
  treatment when ``tq.cancel(id)`` is not honoured within ``kill_grace``; it ends
  ``cancelled``. Other tasks are only asked (their cancel event), as with threads.
- **survive a crash**: a child that dies (a segfault, ``os._exit``, the OOM killer) fails
  that attempt with its exit status or signal in ``last_error``; the slot forks a new
  child; the worker and its other slots go on.
- **recycle** a child between two jobs after ``max_jobs_per_child`` jobs, or once its
  resident memory passes ``max_memory_per_child`` MiB (leaky tasks, fragmented heaps).
- run CPU-bound jobs on every core.

Why the children are forked, and what makes that safe: ``child_process``.

One thread of the worker, the dispatcher, serves all the children: it waits in one
``poll()`` on their channels, their pidfds (readable when the process has exited) and a
wake-up pipe, hands queued jobs to idle children, passes outcomes on, and runs the
timeout, cancel, crash and recycling state of each child. A thread per child, blocked on
its own channel, was simpler but spent the worker's CPU on waking threads and passing
the GIL around: draining 20,000 no-op jobs at concurrency 8 on 2 busy cores, the pool ran
at 0.50-0.58 of the thread pool's rate that way, and at 0.62-0.65 with the dispatcher
(~11,000 jobs/s at a load average of 12).

Graceful shutdown is the thread pool's: running jobs get ``grace`` seconds to finish;
after it their children are killed (before the jobs are handed back, uncharged, so no
other worker starts one while it still runs here).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pgtaskq.hooks import JobHooks
from pgtaskq.worker import process_child
from pgtaskq.worker.child_process import (
    CHILD_EXIT_TIMEOUT,
    ChildProcess,
    describe_status,
    exited_within,
    forget,
    outcome_of_gone,
    outcome_of_reply,
    remember,
)
from pgtaskq.worker.held import HeldJob
from pgtaskq.worker.outcome import Outcome
from pgtaskq.worker.slots import deliver, run_attempt

if TYPE_CHECKING:
    from pgtaskq.queue import TaskQueue
    from pgtaskq.worker.capacity import Capacity
    from pgtaskq.worker.completer import Completer
    from pgtaskq.worker.config import WorkerConfig

log = logging.getLogger("pgtaskq.worker")

SWITCH_INTERVAL = 0.001
"""The worker's GIL switch interval while the pool runs (put back when it stops).

No task code runs in the worker process then: its threads (dispatcher, completer, main
loop) only move bytes, and a thread back from a system call waits for the GIL at most
1 ms instead of CPython's default 5. No-op drains, 5 interleaved pairs at a load average
of 4-6: median 9,939 jobs/s with the default, 11,125 with 1 ms."""


class ProcessSlots:
    """``concurrency`` child processes fed by ``submit()``; the same interface as
    ``Slots`` (start, busy, submit, take_waiting, stop, join), plus ``abandon()``.

    A child runs each job with ``slots.run_attempt`` (middlewares, hooks, logging, the
    outcome), the code a slot thread runs; the dispatcher hands each outcome to the
    completer and the capacity back to the main loop, as a slot thread does.
    """

    def __init__(self, config: WorkerConfig, tq: TaskQueue, *, completer: Completer,
                 capacity: Capacity, wake: Callable[[], None]) -> None:
        self.concurrency = concurrency = config.concurrency
        self._config = config
        self._tasks = tq.tasks
        self._middlewares = tq.job_middlewares
        self._hooks: JobHooks | None = tq.job_hooks
        self._completer = completer
        self._capacity = capacity
        self._wake_main = wake
        self._children = [ChildProcess(n) for n in range(concurrency)]
        for child in self._children:
            child.on_cancel = child.cancel_callback(wake=self._wake)
        self._queue: collections.deque[HeldJob] = collections.deque()
        self._lock = threading.Lock()
        self._sleeping = False  # the dispatcher is (about to be) in poll()
        self._woken = False
        self._busy = 0
        self._stopping = False
        self._abandoned = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        remember(self._wake_r, self._wake_w)
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        self._by_fd: dict[int, tuple[ChildProcess, bool]] = {}
        """fd -> (child, True for its channel / False for its pidfd)."""
        self._thread = threading.Thread(target=self._run, name="pgtaskq-processes",
                                        daemon=True)

    def _run_in_child(self, job: HeldJob) -> Outcome:
        """What a child does with a job (in the child)."""
        task = self._tasks.get(job.task)
        job.func = task.func if task is not None else None
        return run_attempt(job, self._middlewares, self._hooks)

    # -- the Slots interface (any thread) -----------------------------------------------

    def start(self) -> None:
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL))
        self._thread.start()

    @property
    def busy(self) -> int:
        """Slots running a job right now."""
        return self._busy

    def submit(self, job: HeldJob) -> None:
        with self._lock:
            self._queue.append(job)
            wake = self._sleeping and not self._woken
            if wake:
                self._woken = True
        if wake:
            self._wake()

    def take_waiting(self) -> list[HeldJob]:
        """Remove and return the jobs not yet started (for handing them back)."""
        with self._lock:
            waiting, self._queue = list(self._queue), collections.deque()
        return waiting

    def stop(self) -> None:
        """Start no more jobs; the children exit once their current job is done."""
        self._stopping = True
        self._wake()

    def join(self, timeout: float) -> bool:
        """Wait for the running jobs and the children; False if some still run."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def abandon(self, timeout: float) -> bool:
        """Shutdown past its grace period: kill the children that still run a job (their
        jobs are handed back, not failed); True once they are gone."""
        self._abandoned = True
        busy = [c for c in self._children if c.job is not None and c.pid is not None]
        for child in busy:
            child.signal_group(signal.SIGKILL)
        self._wake()
        deadline = time.monotonic() + timeout
        return all(exited_within(c.pidfd, max(0.0, deadline - time.monotonic()))
                   for c in busy)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    # -- the dispatcher -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            for child in self._children:
                self._start_child(child)
            while not (self._stopping and self._busy == 0):
                try:
                    self._run_once()
                except Exception:  # pragma: no cover - log it, and go on serving
                    log.exception("process pool dispatcher: unexpected error")
                    time.sleep(0.1)
        finally:
            self._close_children()
            sys.setswitchinterval(self._switch_interval)

    def _run_once(self) -> None:
        self._dispatch()
        nearest = self._tick(time.monotonic())
        with self._lock:
            idle = self._queue and any(c.ready for c in self._children)
            self._sleeping = not idle
            self._woken = False
        wait_ms = 0 if idle else None if nearest is None else \
            max(0, int((nearest - time.monotonic()) * 1000) + 1)
        events = self._poller.poll(wait_ms)
        self._sleeping = False
        self._handle(events)

    def _handle(self, events: list[tuple[int, int]]) -> None:
        gone = []
        for fd, _ in events:
            if fd == self._wake_r:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
                continue
            child, is_channel = self._by_fd.get(fd, (None, False))
            if child is not None and is_channel:
                self._receive(child)
            elif child is not None:
                gone.append(child)
        for child in gone:  # after the replies: a child may answer, then exit
            self._gone(child)

    def _dispatch(self) -> None:
        """Hand queued jobs to ready children (starting children that are missing)."""
        if self._stopping or self._abandoned:
            return
        for child in self._children:
            if child.pid is None and child.exit_by is None:
                self._start_child(child)
        while True:
            child = next((c for c in self._children if c.ready), None)
            if child is None:
                return
            with self._lock:
                if not self._queue:
                    return
                job = self._queue.popleft()
            context = job.context
            if context.cancel_requested and not context.timed_out:
                self._deliver(job, Outcome.cancelled(
                    job, "Cancelled: cancel requested before the job started"))
                continue
            job.running_since = time.monotonic()
            assert child.conn is not None
            try:
                child.conn.send(process_child.job_message(job))
            except OSError:  # it died idle (or closed its end): the job waits for another
                with self._lock:
                    self._queue.appendleft(job)
                child.signal_group(signal.SIGKILL)
                self._gone(child)
                self._start_child(child)
                continue
            child.job = job
            child.cancel_at = None
            self._busy += 1
            context.add_cancel_callback(child.on_cancel)

    def _receive(self, child: ChildProcess) -> None:
        assert child.conn is not None
        try:
            reply = child.conn.recv()
        except (EOFError, OSError):
            self._unregister(child.conn.fileno())  # end of file: its pidfd follows
            return
        job = child.job
        if job is None:  # pragma: no cover - the protocol is one reply per job
            return
        self._end_job(child)
        child.jobs_done += 1
        outcome, rss = outcome_of_reply(job, reply)
        why = child.recycle_reason(self._config, rss)
        if why is not None:
            log.info("slot %d: replacing child process %d (%s)", child.slot, child.pid, why)
            child.ask_to_exit()
        self._deliver(job, outcome)

    def _gone(self, child: ChildProcess) -> None:
        """The child has exited (its pidfd is readable): reap it, end its job."""
        if child.conn is not None and child.job is not None and \
                exited_within(child.conn.fileno(), 0):
            self._receive(child)  # it answered before it went: that outcome counts
        job = child.job
        status = self._reap(child)
        if job is None:
            if not (self._stopping or self._abandoned) and child.exit_by is None:
                log.warning("slot %d: idle child process %s", child.slot,
                            describe_status(status))
            child.exit_by = None
            return
        # (abandoned: no outcome, the worker hands the job back)
        outcome = None if self._abandoned else outcome_of_gone(
            child, job, status, self._config.kill_grace, self._hooks)
        self._end_job(child)
        child.exit_by = None
        if outcome is not None:
            self._deliver(job, outcome)

    def _end_job(self, child: ChildProcess) -> None:
        job = child.job
        if job is not None:
            job.context.remove_cancel_callback(child.on_cancel)
            child.job = None
            self._busy -= 1
        child.cancel_at = None
        child.term_at = None
        child.killed = False

    def _deliver(self, job: HeldJob, outcome: Outcome) -> None:
        deliver(job, outcome, self._completer, self._capacity, self._wake_main)

    # -- time and processes -------------------------------------------------------------

    def _tick(self, now: float) -> float | None:
        """Act on the children whose deadline has passed; the nearest deadline left.
        (Once per loop, one pass: on short jobs this loop runs for every few jobs.)"""
        nearest = None
        for child in self._children:
            if child.job is None and child.exit_by is None:
                continue
            deadline = child.deadline(self._config.kill_grace, self._force_cancel)
            if deadline is not None and now >= deadline and child.pid is not None:
                child.act(now)
                deadline = child.deadline(self._config.kill_grace, self._force_cancel)
            if deadline is not None and (nearest is None or deadline < nearest):
                nearest = deadline
        return nearest

    def _force_cancel(self, name: str) -> bool:
        return getattr(self._tasks.get(name), "force_cancel", False)

    def _start_child(self, child: ChildProcess) -> None:
        """Fork the slot's child (in the dispatcher thread, which lives as long as the
        pool: the child's PR_SET_PDEATHSIG is tied to it)."""
        if not child.fork(self._run_in_child, self._config.max_memory_per_child is not None):
            return  # the next dispatch tries again
        assert child.conn is not None
        for fd, is_channel in ((child.conn.fileno(), True), (child.pidfd, False)):
            self._poller.register(fd, select.POLLIN)
            self._by_fd[fd] = (child, is_channel)

    def _reap(self, child: ChildProcess) -> int | None:
        for fd in child.fds():
            self._unregister(fd)
        return child.reap()

    def _unregister(self, fd: int) -> None:
        if self._by_fd.pop(fd, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(fd)

    def _close_children(self) -> None:
        """The pool stops: every child exits (SIGKILL for those that do not)."""
        for child in self._children:
            if child.pid is not None and child.job is None:
                child.ask_to_exit()
            elif child.pid is not None:  # abandoned, or the dispatcher failed
                child.signal_group(signal.SIGKILL)
        deadline = time.monotonic() + CHILD_EXIT_TIMEOUT
        for child in self._children:
            if child.pid is None:
                continue
            if not child.exited_within(max(0.0, deadline - time.monotonic())):
                child.signal_group(signal.SIGKILL)
            self._reap(child)
            if child.job is not None:
                self._end_job(child)
        forget(self._wake_r, self._wake_w)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
