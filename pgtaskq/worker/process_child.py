"""The child side of a process slot: a loop that runs one job at a time for its parent.

The child is forked from the worker (``pgtaskq.worker.process_pool`` says why fork), so it has
the application exactly as the worker imported and configured it: the tasks, the job
middlewares (Flask's app context, Django's connection handling), the hooks, logging. It
runs each job through the same code as a slot thread (``slots.run_attempt``), so
``current_job()``, cooperative cancel, results, retries, middlewares and hooks behave the
same, and its log lines are the same (printed by the child, through the handlers it
inherited).

It never talks to PostgreSQL for the worker: the at-fork handler of ``pgtaskq.forking``
has put /dev/null in place of every socket of the worker's pools and listener, and the
TaskQueue opens a new pool of its own in a process with a new pid, so a task that
enqueues or connects gets fresh connections.

Protocol, over a socketpair with the parent (``Channel``: pickled frames):

- parent -> child: a job as a tuple (``_job_message``), or ``None``: exit now (between
  jobs; end of file means the same);
- child -> parent: ``(kind, error, result, delay, run_ms, rss_mib)``, the ``Outcome``
  fields, with the child's resident memory when the parent recycles on memory.

and one pipe parent -> child for cancel requests: ``struct`` ``(job id, timed_out)``,
read by a thread of the child that sets the running job's cancel event (a signal handler
could not: it runs between two bytecodes of the task, possibly inside the lock
``request_cancel`` takes).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import struct
import sys
import threading
from collections.abc import Callable
from pickle import HIGHEST_PROTOCOL, dumps, loads
from typing import Any

from pgtaskq import context as context_module
from pgtaskq import forking
from pgtaskq.context import JobContext
from pgtaskq.worker.exit_rules import resident_mib
from pgtaskq.worker.held import HeldJob
from pgtaskq.worker.outcome import Outcome

CANCEL = struct.Struct("=qB")
"""A cancel request on the cancel pipe: job id, 1 if it is the job's timeout."""

_PR_SET_PDEATHSIG = 1
_HEADER = struct.Struct("!I")
READ_SIZE = 65536


class Channel:
    """Pickled frames over one end of a socketpair (the parent's own forked child is
    the only peer: pickle is safe here; jobs' arguments are JSON in the database).

    One write per frame, and one read for a frame that fits in ``READ_SIZE`` (nearly
    all): on no-op jobs every system call is a release and re-acquisition of the GIL in
    a worker whose slot threads contend for it, and ``multiprocessing.connection``'s
    separate reads of header and body cost a tenth of the process pool's throughput.
    """

    __slots__ = ("_buffer", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""

    def fileno(self) -> int:
        return self.fd

    def send(self, message: Any) -> None:
        data = dumps(message, HIGHEST_PROTOCOL)
        view = memoryview(_HEADER.pack(len(data)) + data)
        while view:
            view = view[os.write(self.fd, view):]

    def recv(self) -> Any:
        """The next message (blocks); ``EOFError`` when the peer is gone."""
        buffer = self._buffer
        while True:
            need = _HEADER.size
            if len(buffer) >= need:
                need += _HEADER.unpack_from(buffer)[0]
                if len(buffer) >= need:
                    self._buffer = buffer[need:]
                    return loads(memoryview(buffer)[_HEADER.size:need])
            chunk = os.read(self.fd, max(READ_SIZE, need - len(buffer)))
            if not chunk:
                self._buffer = b""
                raise EOFError
            buffer += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

JobMessage = tuple[int, str, str, list[Any], dict[str, Any], int, int, float, "int | None"]


def job_message(job: HeldJob) -> JobMessage:
    """What the parent sends for ``job``."""
    return (job.id, job.task, job.queue, job.args, job.kwargs, job.attempt,
            job.max_attempts, job.wait_ms, job.context.worker_id)


class _Current:
    """The running job's context and cancel requests that came before it (the cancel
    pipe and the job channel are read by two threads, in no guaranteed order)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.context: JobContext | None = None
        self.early: dict[int, bool] = {}

    def start(self, context: JobContext) -> None:
        with self.lock:
            self.context = context
            timed_out = self.early.pop(context.id, None)
            self.early.clear()
        if timed_out is not None:
            _cancel(context, timed_out)

    def end(self) -> None:
        with self.lock:
            self.context = None

    def cancel(self, job_id: int, timed_out: bool) -> None:
        with self.lock:
            context = self.context
            if context is None or context.id != job_id:
                self.early[job_id] = timed_out
                return
        _cancel(context, timed_out)


def _cancel(context: JobContext, timed_out: bool) -> None:
    if timed_out:
        context.timed_out = True
    context.request_cancel()


def main(conn: Channel, cancel_fd: int, parent_pid: int,
         run_one: Callable[[HeldJob], Outcome], report_memory: bool,
         close_fds: list[int]) -> None:
    """Run in the new child right after ``os.fork()``; never returns (``os._exit``)."""
    code = 0
    try:
        _detach(parent_pid, close_fds)
        _serve(conn, cancel_fd, run_one, report_memory)
    except BaseException:  # a child must never return into the slot code
        code = 70
        with contextlib.suppress(Exception):
            import traceback

            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _detach(parent_pid: int, close_fds: list[int]) -> None:
    """Make this fresh fork a child that only serves its slot."""
    # Its own process group: a Ctrl-C in the terminal (SIGINT to the foreground group)
    # reaches the worker only, which decides what its jobs get; and the parent can signal
    # the job's whole process tree (what the task forked included) with one killpg.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    # Dies with the thread that forked it (its slot thread, which lives as long as the
    # worker): a worker killed with SIGKILL leaves no child running a job whose lease
    # will expire and be taken by another worker (Linux only; elsewhere the child exits
    # at the end of its job, on end of file).
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(0)
    for fd in close_fds:  # the other slots' ends: their children must see end of file
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A lock another thread of the worker held at the fork stays held here for ever.
    context_module._cancel_lock = threading.Lock()
    forking.serve_in_child()


def _serve(conn: Channel, cancel_fd: int, run_one: Callable[[HeldJob], Outcome],
           report_memory: bool) -> None:
    current = _Current()
    threading.Thread(target=_read_cancels, args=(cancel_fd, current),
                     name="pgtaskq-child-cancel", daemon=True).start()
    recv, send = conn.recv, conn.send
    while True:
        try:
            message = recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        (job_id, task, queue, args, kwargs, attempt, max_attempts, wait_ms,
         worker_id) = message
        context = JobContext(job_id, task, queue, attempt, max_attempts, worker_id)
        job = HeldJob(job_id, task, queue, args, kwargs, attempt, max_attempts, wait_ms,
                      context)
        current.start(context)
        try:
            outcome = run_one(job)
        finally:
            current.end()
        send((outcome.kind, outcome.error, outcome.result, outcome.delay, outcome.run_ms,
              resident_mib() if report_memory else None))


def _read_cancels(fd: int, current: _Current) -> None:
    size = CANCEL.size
    buffer = b""
    while True:
        try:
            data = os.read(fd, 4096)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        except OSError:
            return
        if not data:
            return
        buffer += data
        while len(buffer) >= size:
            job_id, timed_out = CANCEL.unpack_from(buffer)
            buffer = buffer[size:]
            current.cancel(job_id, bool(timed_out))
