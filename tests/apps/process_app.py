"""Tasks for the process pool's tests: the basic app's tasks plus ones that hang, crash,
leak or refuse to stop (``--pool process`` stops or survives them)."""

from __future__ import annotations

import ctypes
import os
import threading
import time

from apps.basic import _record, tq
from pgtaskq import current_job

__all__ = ["tq"]

_leak: list[bytes] = []
_state = threading.local()


@tq.add_job_middleware
def mark(job, call_next):
    """Runs around every job, in the child: the task can see it did."""
    _state.middleware = job.id
    try:
        return call_next()
    finally:
        _state.middleware = None


@tq.on_failure
def note_failure(job, error):
    """Fired in the child for an exception, in the worker for a child that is gone."""
    _record("on_failure", type(error).__name__)


@tq.task(name="hang", timeout=1, max_attempts=2)
def hang(seconds=40):
    _record("started", os.getpid())
    time.sleep(seconds)
    _record("finished")


@tq.task(name="exit3", max_attempts=2)
def exit3():
    _record("started", os.getpid())
    os._exit(3)


@tq.task(name="segfault", max_attempts=1)
def segfault():
    _record("started", os.getpid())
    ctypes.string_at(0)


@tq.task(name="whoami")
def whoami(value=None):
    job = current_job()
    _record("ran", f"{os.getpid()}:{value}")
    return {"pid": os.getpid(), "id": job.id, "attempt": job.attempt,
            "middleware": getattr(_state, "middleware", None) == job.id}


@tq.task(name="leak")
def leak(mib=5):
    _leak.append(b"x" * (mib * 2**20))
    _record("ran", os.getpid())


@tq.task(name="stubborn", force_cancel=True)
def stubborn(seconds=40):
    _record("started", os.getpid())
    time.sleep(seconds)  # never looks at its cancel event
    _record("finished")


@tq.task(name="polite")
def polite(seconds=40):
    _record("started", os.getpid())
    if current_job().cancel_event.wait(seconds):
        _record("cancelled")
        current_job().check_cancelled()
    _record("finished")


@tq.task(name="timeout_cooperative", timeout=0.5, max_attempts=1)
def timeout_cooperative():
    _record("started", os.getpid())
    current_job().cancel_event.wait(30)
    _record("saw cancel")
    current_job().check_cancelled()


@tq.task(name="spin")
def spin(ms=20):
    deadline = time.process_time() + ms / 1000
    n = 0
    while time.process_time() < deadline:
        n += 1
    return n
