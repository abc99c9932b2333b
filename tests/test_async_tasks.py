"""``@tq.task async def``: run to completion in a real worker, cancelled and timed out
while it awaits (tasks in tests/apps/async_app.py)."""

from __future__ import annotations

import time

import pytest
from worker_helpers import FAST, create_runs_table, runs, status_of

from pgtaskq.testing import wait_until

APP = "apps.async_app:tq"


@pytest.fixture
def worker(db, tq, worker_process):
    create_runs_table(db, tq.schema)
    started = worker_process(APP, "-c", "2", *FAST)
    started.wait_ready()
    yield started
    assert started.stop() == 0, started.output()



def test_a_coroutine_task_runs_and_its_return_value_is_the_result(tq, db, worker):
    job_id = tq.enqueue("async_add", args=[2, 3])
    wait_until(lambda: status_of(tq, job_id) == "succeeded", 15, what="async job done")
    assert tq.get_job(job_id).result == {"sum": 5, "job": job_id}
    assert [r[3] for r in runs(db, tq.schema, "ran")] == ["5"]
    assert "never awaited" not in worker.output()


def test_a_coroutine_over_its_timeout_is_stopped_and_failed(tq, db, worker):
    job_id = tq.enqueue("async_sleep", args=[60], max_attempts=1)
    wait_until(lambda: runs(db, tq.schema, "started"), 10, what="started")
    begun = time.monotonic()
    wait_until(lambda: status_of(tq, job_id) == "failed", 10, what="timed out")
    assert time.monotonic() - begun < 5  # the timeout (1s) stopped the await
    assert "exceeded its timeout of 1" in tq.get_job(job_id).last_error
    assert runs(db, tq.schema, "finished") == []


def test_cancelling_a_running_coroutine_stops_its_await(tq, db, worker):
    job_id = tq.enqueue("async_wait", args=[60])
    wait_until(lambda: runs(db, tq.schema, "started"), 10, what="started")
    asked = time.monotonic()
    assert tq.cancel(job_id) is True
    wait_until(lambda: status_of(tq, job_id) == "cancelled", 10, what="cancelled")
    assert time.monotonic() - asked < 3
    assert [r[2] for r in runs(db, tq.schema)] == ["started", "cancelled"]
