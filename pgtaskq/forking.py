"""What a process forked by a task inherits from its worker, and what the worker knows of it.

A task may call ``os.fork()`` (directly, or through a library). The child is a copy of the
worker: it holds the worker's database sockets, its SIGTERM handler (which only sets a
flag the child's missing main loop never reads) and, when the task function returns or
raises without ``os._exit()``, it goes on running pgtaskq's slot code: a second,
headless worker that ignores SIGTERM and keeps the job it forked from hung for ever.

So, in a process running a ``Worker``, an at-fork handler gives every child:

- /dev/null in place of each of pgtaskq's database sockets (the file descriptor numbers
  stay taken, so nothing the child opens later can be mistaken for them, and nothing it
  writes reaches the worker's PostgreSQL sessions);
- the default SIGTERM and SIGINT actions, and no signal wake-up fd;
- an exit as soon as control comes back to pgtaskq (``Slots`` calls ``leave_child()``).

The parent side remembers each child's pid against the job whose slot forked it, so a
shutdown can tell an attempt whose process tree is still alive (it is charged, see
``Worker._shutdown``) from one merely slow to return.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

_connections: weakref.WeakSet[psycopg.Connection] = weakref.WeakSet()
_worker_pid: int | None = None
_installed = False
_is_child = False
"""Set in a child forked from a running worker (checked once per job: a plain global)."""
_install_lock = threading.Lock()
_children: dict[int, list[int]] = {}
"""Job id -> pids of the processes its slot forked (parent side)."""
_children_lock = threading.Lock()


def track(conn: psycopg.Connection) -> None:
    """Count ``conn``'s socket among those a forked child must not keep."""
    _connections.add(conn)


def worker_started() -> None:
    """Arm the at-fork handlers for this process (a ``Worker`` runs in it)."""
    global _worker_pid, _installed
    with _install_lock:
        _worker_pid = os.getpid()
        if not _installed and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_parent=_after_in_parent, after_in_child=_in_child)
            _installed = True


def worker_stopped() -> None:
    global _worker_pid
    _worker_pid = None


def serve_in_child() -> None:
    """This process is a process-pool child (``pgtaskq.worker.process_pool``) that runs jobs:
    it is a worker of its own for what its tasks fork, not a stray copy of its parent."""
    global _worker_pid, _is_child, _children_lock
    _worker_pid = os.getpid()
    _is_child = False
    _children_lock = threading.Lock()  # another thread of the parent may have held it
    _children.clear()


def in_forked_child() -> bool:
    """True in a process forked from a running worker (by one of its tasks)."""
    return _is_child


def leave_child(job_id: int, task: str, failed: bool) -> None:
    """Called by a slot when a forked child's control comes back to pgtaskq: exit it."""
    message = (f"pgtaskq: process {os.getpid()}, forked by job {job_id} ({task[:200]}), "
               "returned into the worker's code; it exits now (a forked child should end "
               "with os._exit() or exec)\n")
    try:
        os.write(2, message.encode("utf-8", "backslashreplace"))
    finally:
        os._exit(1 if failed else 0)


def live_children(job_id: int) -> list[int]:
    """Pids forked by ``job_id``'s slot that still run (not reaped, not zombies)."""
    with _children_lock:
        pids = list(_children.get(job_id, ()))
    return [pid for pid in pids if _alive(pid)]


def forget(job_id: int) -> None:
    """Drop what is known of ``job_id``'s children (its attempt ended)."""
    if not _children:  # nearly always: no lock on the hot path
        return
    with _children_lock:
        _children.pop(job_id, None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except (OSError, IndexError):
        return True


def _after_in_parent() -> None:
    if _worker_pid != os.getpid():
        return
    from pgtaskq.context import running_job_id

    job_id = running_job_id()
    if job_id is None:
        return
    # the child's pid is not passed to the handler; the newest child is ours: read it
    # from /proc where possible
    pid = _newest_child()
    if pid is not None:
        with _children_lock:
            _children.setdefault(job_id, []).append(pid)


def _newest_child() -> int | None:
    """The most recently created child of this process (Linux: /proc), or None."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{threading.get_native_id()}/children") as f:
            pids = [int(p) for p in f.read().split()]
    except OSError:
        return None
    return max(pids, default=None)


def _in_child() -> None:
    global _is_child
    if _worker_pid is None:
        return
    _is_child = True
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
    except OSError:
        devnull = -1
    for conn in list(_connections):
        try:
            fd = conn.pgconn.socket
        except Exception:  # closed
            continue
        if devnull >= 0:
            with contextlib.suppress(OSError):
                os.dup2(devnull, fd)
    if devnull >= 0:
        os.close(devnull)
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    except (ValueError, OSError):  # pragma: no cover - not the main thread
        sys.stderr.write("pgtaskq: could not reset signal handlers in a forked child\n")
