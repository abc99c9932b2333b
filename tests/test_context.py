"""JobContext's cancellation: a flag for checks, an Event only for tasks that wait on it."""

from __future__ import annotations

import threading

import pytest

from pgtaskq import Cancelled
from pgtaskq.context import JobContext


def _context() -> JobContext:
    return JobContext(7, "t", "default", 1, 3, worker_id=1)


def test_cancel_request_is_seen_by_checks():
    job = _context()
    job.check_cancelled()
    assert not job.cancel_requested
    job.request_cancel()
    assert job.cancel_requested
    with pytest.raises(Cancelled, match="job 7"):
        job.check_cancelled()


def test_event_asked_for_after_the_request_is_already_set():
    job = _context()
    job.request_cancel()
    assert job.cancel_event.is_set()


def test_waiting_task_wakes_on_cancel():
    job = _context()
    woke = []
    waiter = threading.Thread(target=lambda: woke.append(job.cancel_event.wait(30)))
    waiter.start()
    job.cancel_event  # noqa: B018 - the waiter may not have created it yet: make sure
    job.request_cancel()
    waiter.join(10)
    assert woke == [True]
    assert job.cancel_event is job.cancel_event  # one Event per context
