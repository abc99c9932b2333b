"""``run_queued_jobs``: a test runs its queued jobs in its own thread, without a worker."""

from __future__ import annotations

import asyncio

import psycopg

from pgtaskq import current_job
from pgtaskq.inline import run_queued_jobs


def test_due_jobs_run_in_claim_order_including_jobs_they_enqueue(tq):
    seen: list[str] = []

    @tq.task(name="child")
    def child(x):
        seen.append(f"child {x}")
        return x

    @tq.task(name="parent")
    def parent(x):
        seen.append(f"parent {x} attempt {current_job().attempt}")
        child.enqueue(x * 10)
        return x

    @tq.task(name="coro")
    async def coro(x):
        await asyncio.sleep(0)
        return x + 1

    first = parent.using(priority=5).enqueue(1)
    second = coro.enqueue(2)
    later = parent.using(delay=3600).enqueue(3)
    ran = run_queued_jobs(tq)
    assert ran[:2] == [first, second] and len(ran) == 3
    assert seen == ["parent 1 attempt 1", "child 10"]
    assert tq.get_job(second).result == 3
    assert tq.get_job(ran[2]).status == "succeeded"
    assert tq.get_job(later).status == "queued"
    assert run_queued_jobs(tq) == []


def test_a_failure_is_retried_later_not_in_the_same_call(tq):
    calls: list[int] = []

    @tq.task(name="flaky", max_attempts=2)
    def flaky():
        calls.append(current_job().attempt)
        raise RuntimeError("no")

    job_id = flaky.enqueue()
    assert run_queued_jobs(tq) == [job_id]
    job = tq.get_job(job_id)
    assert (job.status, job.attempts, calls) == ("queued", 1, [1])
    assert "RuntimeError: no" in job.last_error


def test_jobs_of_a_rolled_back_transaction_run_in_it_and_vanish_with_it(tq, pgtaskq_dsn):
    @tq.task(name="noted")
    def noted():
        return "ran"

    with psycopg.connect(pgtaskq_dsn) as conn:
        job_id = noted.using(conn=conn).enqueue()
        assert run_queued_jobs(tq, conn=conn) == [job_id]
        assert tq.get_job(job_id) is None  # not committed: invisible outside
        conn.rollback()
    assert tq.get_job(job_id) is None
    assert run_queued_jobs(tq) == []
