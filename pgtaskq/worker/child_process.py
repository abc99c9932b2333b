"""One process-pool slot's child, as the worker sees it: fork, signals, exit, reaping,
when its running job's time is up, and how its job ended. (The child's own side is
``process_child``; the dispatcher that serves every child is ``process_pool``.)

Why fork (and not spawn or forkserver). The child must have the application as the
worker has it: the TaskQueue and its tasks, and what the command line or the framework
built at run time, not only at import (``flask pgtaskq worker`` creates the Flask app
and adds its app-context middleware, ``manage.py`` sets Django up, a test or a script
defines tasks in ``__main__`` or in a closure). Spawn and forkserver start from a fresh
interpreter that would have to rebuild all of that from an import path, and pay that
import (seconds for a Django project) for every new child: after each timeout, crash and
recycle. A fork costs a few milliseconds and copies the state as it is.

Fork's dangers, and what is done about them:

- *Connections*: the child inherits the sockets of the worker's pools and listener. The
  at-fork handler of ``pgtaskq.forking`` puts /dev/null in their place in the child, so
  nothing the child does (a garbage-collected connection's goodbye included) reaches the
  worker's sessions; the TaskQueue sees a new pid and opens a new pool for tasks that
  enqueue. Django opens its connections per thread, and the child's thread never had one.
- *Threads*: the worker is multi-threaded when it forks, and only the forking thread
  exists in the child; a lock another thread held at that moment stays held there. The
  child runs only its serving loop and the task: CPython resets the locks of the import
  system and of ``logging`` at fork, and the child resets pgtaskq's own
  (``process_child._detach``). Libraries a task uses that keep global state with threads
  of their own (an HTTP client's pool, gRPC) should be set up in the task or per
  process, as with any prefork server (gunicorn, Celery's prefork pool).
- *Signals*: the child sits in its own process group (Ctrl-C in a terminal reaches the
  worker only, which shuts down as usual), ignores SIGINT, takes SIGTERM's default
  action, and dies (``PR_SET_PDEATHSIG``) when the thread that forked it does (the
  dispatcher, which lives as long as the pool): a worker killed with SIGKILL leaves no job
  running. systemd's ``KillMode=mixed`` (the unit in ``contrib/systemd``) sends SIGTERM
  to the worker only.
- *Descriptors*: a new child closes the worker's ends of every other child's channels,
  so each child's end of file means what it says.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pgtaskq.context import set_current
from pgtaskq.errors import ProcessDied
from pgtaskq.worker import process_child
from pgtaskq.worker.outcome import Outcome

if TYPE_CHECKING:
    from pgtaskq.hooks import JobHooks
    from pgtaskq.worker.config import WorkerConfig
    from pgtaskq.worker.held import HeldJob

log = logging.getLogger("pgtaskq.worker")

TERM_TO_KILL = 0.5
"""Seconds between SIGTERM and SIGKILL for a job's process group."""
CHILD_EXIT_TIMEOUT = 5.0
"""Seconds a child asked to exit between jobs (recycling, shutdown) gets before SIGKILL."""

# Python 3.12+ warns on every fork of a multi-threaded process; the docstring says why
# this one is deliberate and what makes it safe. (Only the forks made here: a task that
# forks in a thread-pool worker still deserves the warning.)
warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks",
                        category=DeprecationWarning, module=__name__)

_parent_fds: set[int] = set()
"""The worker's ends of every child's channels (a new child closes them)."""
_parent_fds_lock = threading.Lock()


class ChildProcess:
    """One slot's child process. The dispatcher thread drives it; the cancel callback
    (any thread) only reads ``job`` and writes to ``cancel_w``."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.pid: int | None = None
        self.pidfd = -1
        """Readable once the process has exited (it need not be reaped)."""
        self.conn: process_child.Channel | None = None
        self.cancel_w = -1
        self.jobs_done = 0
        self.job: HeldJob | None = None
        self.cancel_at: float | None = None
        """When the running job's cancel event was set (timeout or cancel request)."""
        self.term_at: float | None = None
        """When its job was sent SIGTERM to stop it (None: it was not)."""
        self.killed = False
        self.exit_by: float | None = None
        """Asked to exit between jobs (recycling, shutdown): SIGKILL at this time."""
        self.on_cancel: Callable[[], None] = lambda: None

    @property
    def ready(self) -> bool:
        """Alive and free for a job."""
        return self.pid is not None and self.job is None and self.exit_by is None

    def fds(self) -> list[int]:
        """The worker's descriptors of this child (its channel, its pidfd)."""
        return [fd for fd in (self.conn.fileno() if self.conn else -1, self.pidfd)
                if fd >= 0]

    def fork(self, run_in_child: Callable[[HeldJob], Outcome], report_memory: bool) -> bool:
        """Start the child; False when the system refuses a fork (EAGAIN, ENOMEM)."""
        parent_sock, child_sock = socket.socketpair()
        cancel_r, cancel_w = os.pipe()
        parent_end = process_child.Channel(parent_sock.detach())
        child_end = process_child.Channel(child_sock.detach())
        with _parent_fds_lock:
            close_in_child = sorted(_parent_fds)
        close_in_child += [parent_end.fileno(), cancel_w]
        parent_pid = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            log.error("slot %d: could not fork a child process: %s", self.slot, exc)
            for end in (parent_end, child_end):
                end.close()
            for fd in (cancel_r, cancel_w):
                os.close(fd)
            return False
        if pid == 0:  # the child: never returns
            process_child.main(child_end, cancel_r, parent_pid, run_in_child, report_memory,
                               close_in_child)
        with contextlib.suppress(OSError):  # the child does it too: whoever comes first
            os.setpgid(pid, pid)
        child_end.close()
        os.close(cancel_r)
        os.set_blocking(cancel_w, False)
        self.pid, self.conn, self.cancel_w = pid, parent_end, cancel_w
        self.pidfd = os.pidfd_open(pid)
        self.jobs_done = 0
        remember(parent_end.fileno(), cancel_w, self.pidfd)
        log.debug("slot %d: child process %d started", self.slot, pid)
        return True

    def ask_to_exit(self) -> None:
        """Between jobs: ask the child to exit (SIGKILL at ``exit_by`` if it has not)."""
        if self.pid is None or self.exit_by is not None:
            return
        self.exit_by = time.monotonic() + CHILD_EXIT_TIMEOUT
        assert self.conn is not None
        with contextlib.suppress(OSError):
            self.conn.send(None)

    def signal_group(self, signum: int) -> None:
        """Signal the child's process group: the child and what its task forked."""
        signal_group(self.pid, signum)

    def exited_within(self, timeout: float) -> bool:
        return exited_within(self.pidfd, timeout)

    def reap(self) -> int | None:
        """Wait for the child (it has exited or is about to), close its descriptors;
        its wait status (None if unknown)."""
        pid, status = self.pid, None
        if pid is not None:
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                status = None
            # what the task forked into the child's group goes with it
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        forget(*self.fds(), self.cancel_w)
        if self.conn is not None:
            self.conn.close()
        for fd in (self.pidfd, self.cancel_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.pid, self.pidfd, self.cancel_w, self.conn = None, -1, -1, None
        return status

    def cancel_callback(self, wake: Callable[[], None]) -> Callable[[], None]:
        """What the running job's context calls when it is cancelled (any thread): tell
        the child, and ``wake`` the dispatcher, which may have to stop it after the grace."""
        def on_cancel() -> None:
            job = self.job
            if job is None:
                return
            if self.cancel_at is None:
                self.cancel_at = time.monotonic()
            with contextlib.suppress(OSError):
                os.write(self.cancel_w,
                         process_child.CANCEL.pack(job.id, job.context.timed_out))
            wake()
        return on_cancel

    # -- time ---------------------------------------------------------------------------

    def deadline(self, kill_grace: float, force_cancel: Callable[[str], bool]
                 ) -> float | None:
        """When ``act()`` has something to do (None: nothing while the job behaves);
        ``force_cancel(task)``: whether a cancel request stops the task's process."""
        if self.exit_by is not None:
            return self.exit_by
        job = self.job
        if job is None or self.killed:
            return None
        if self.term_at is not None:
            return self.term_at + TERM_TO_KILL
        context = job.context
        if context.timed_out or (context.cancel_requested and force_cancel(job.task)):
            if self.cancel_at is None:
                self.cancel_at = time.monotonic()
            return self.cancel_at + kill_grace
        if job.timeout is not None and job.running_since is not None:
            return job.running_since + job.timeout  # then marked timed out (act())
        return None

    def act(self, now: float) -> None:
        """Its deadline has passed: SIGKILL after SIGTERM or an ignored request to exit;
        SIGTERM to a job past its grace; mark a job past its timeout."""
        job = self.job
        if self.exit_by is not None or self.term_at is not None:
            self.signal_group(signal.SIGKILL)
            self.killed = True
            if self.exit_by is not None:
                self.exit_by = now + CHILD_EXIT_TIMEOUT  # and again, later
        elif job is not None and (job.context.timed_out or job.context.cancel_requested):
            self.signal_group(signal.SIGTERM)
            self.term_at = now
        elif job is not None:
            # the main loop has not marked the timeout yet (it is busy): do it here
            job.context.timed_out = True
            job.context.request_cancel()

    def recycle_reason(self, config: WorkerConfig, rss: float | None) -> str | None:
        """Why the child should be replaced after the job it just finished, or None."""
        if config.max_jobs_per_child is not None and \
                self.jobs_done >= config.max_jobs_per_child:
            return f"{self.jobs_done} jobs, max_jobs_per_child"
        if rss is not None and config.max_memory_per_child is not None and \
                rss > config.max_memory_per_child:
            return f"{rss:.0f} MiB resident, max_memory_per_child " \
                   f"{config.max_memory_per_child:g}"
        return None


def signal_group(pid: int | None, signum: int) -> None:
    if pid is None:
        return
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    except PermissionError:  # pragma: no cover
        with contextlib.suppress(OSError):
            os.kill(pid, signum)


def exited_within(fd: int, timeout: float) -> bool:
    """True if ``fd`` (a pidfd: the process exited; a channel: data) is readable."""
    if fd < 0:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    except (OSError, ValueError):  # closed meanwhile by the dispatcher: it was reaped
        return True
    return bool(ready)


def remember(*fds: int) -> None:
    with _parent_fds_lock:
        _parent_fds.update(fds)


def forget(*fds: int) -> None:
    with _parent_fds_lock:
        _parent_fds.difference_update(fds)


def describe_status(status: int | None) -> str:
    """'exited with status 3' / 'was killed by signal 11 (SIGSEGV)' from a wait status."""
    if status is None:
        return "ended (its exit status is unknown)"
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = "unknown"
        extra = " (the kernel's OOM killer, or someone, killed it)" \
            if signum == signal.SIGKILL else ""
        return f"was killed by signal {signum} ({name}){extra}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


# -- outcomes -----------------------------------------------------------------------------

def outcome_of_reply(job: HeldJob, reply: tuple[Any, ...]) -> tuple[Outcome, float | None]:
    """The outcome the child sent for ``job``, and its resident memory (MiB) if sent."""
    kind, error, result, delay, run_ms, rss = reply
    if job.context.timed_out and not (kind == "failed" and error
                                      and error.startswith("TimeoutError")):
        return timed_out(job, "it returned after its timeout"), rss
    return Outcome(job.id, job.attempt, kind, error=error, result=result, delay=delay,
                   queue=job.queue, task=job.task, wait_ms=job.wait_ms, run_ms=run_ms,
                   max_attempts=job.max_attempts), rss


def outcome_of_gone(child: ChildProcess, job: HeldJob, status: int | None, kill_grace: float,
                    hooks: JobHooks | None) -> Outcome:
    """How ``job`` ended when its child exited without an answer: stopped at its timeout,
    stopped for a forced cancel, or died. Failure hooks fire here, in the worker (the
    child that would have fired them is gone), with ``current_job()`` answering."""
    how = "SIGKILL" if child.killed else "SIGTERM"
    if child.term_at is not None and job.context.timed_out:
        log.warning("job %d (%s): still running %gs after its timeout of %gs; its process "
                    "was stopped (%s)", job.id, job.task, kill_grace, job.timeout, how)
        outcome = timed_out(job, f"its process was stopped ({how}) {kill_grace:g}s after "
                                 "the timeout")
    elif child.term_at is not None:
        log.warning("job %d (%s): cancel requested and not honoured within %gs; its "
                    "process was stopped (%s)", job.id, job.task, kill_grace, how)
        return Outcome.cancelled(job, f"Cancelled: cancel requested; the task did not stop "
                                      f"within {kill_grace:g}s and its process was stopped "
                                      f"({how})")
    elif job.context.timed_out:
        outcome = timed_out(job, "its process died")
    else:
        described = describe_status(status)
        log.warning("slot %d: job %d (%s): child process %s", child.slot, job.id, job.task,
                    described)
        outcome = Outcome.failed(
            job, f"ProcessDied: the child process running job {job.id} ({job.task}) "
                 f"{described}; the attempt failed and the slot starts a new process")
    if hooks:
        error = TimeoutError(outcome.error) if job.context.timed_out \
            else ProcessDied(outcome.error)
        set_current(job.context)
        try:
            hooks.fire(job.context, outcome.kind, error, None)
        finally:
            set_current(None)
    return outcome


def timed_out(job: HeldJob, detail: str) -> Outcome:
    return Outcome.failed(job, f"TimeoutError: job {job.id} ({job.task}) exceeded its "
                               f"timeout of {job.timeout}s; {detail}")
