"""Cancel requests: never forgotten by a failure, a hand-back or a racing claim, and
never started when they reach a prefetched job (``pgtaskq.worker.cancels``, ``sql.jobs.CANCEL``).
"""

from __future__ import annotations

import signal
import threading

import psycopg
import pytest
from worker_helpers import (
    FAKE_WORKER,
    FAST,
    claim,
    create_runs_table,
    runs,
    stats_row,
    status_of,
    without_option,
)

from pgtaskq.pool import LivenessCheck, open_pool
from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql
from pgtaskq.testing import wait_until
from pgtaskq.worker.completer import Completer
from pgtaskq.worker.held import HeldJobs
from pgtaskq.worker.outcome import Outcome

APP = "apps.basic:tq"


@pytest.fixture
def pool(tq):
    pool = open_pool(tq.conninfo, min_size=1, max_size=2, name="review",
                     liveness=LivenessCheck())
    try:
        yield pool
    finally:
        pool.close()


# -- a cancel request must never be forgotten --------------------------------------------


@pytest.mark.parametrize("kind", ["failed", "retry"])
def test_failure_after_cancel_request_ends_cancelled_not_requeued(tq, db, pool, kind):
    """A job whose cancel was requested (tq.cancel returned True) and whose attempt then
    ended in an exception or ``Retry`` was queued again by COMPLETE, with the request
    cleared: the cancelled job ran again. The slot maps exceptions to 'cancelled' only
    when it saw the request in time; a request arriving between the job's end and the
    completer's flush (or a task raising Retry) slipped through."""
    job_id = tq.enqueue("some.task", max_attempts=5)
    (row,) = claim(db, tq, ["some.task"])
    attempt = row[6]
    assert tq.cancel(job_id) is True  # running: cancel requested
    completer = Completer(pool, tq.schema, FAKE_WORKER, HeldJobs())
    completer._write([Outcome(job_id, attempt, kind, error="RuntimeError: boom",
                              queue="default", task="some.task", max_attempts=5)])
    job = tq.get_job(job_id)
    assert job.status == "cancelled"
    assert job.attempts == 1
    # the rollups count it as cancelled, not as a retry
    assert stats_row(db, tq, "some.task") == (0, 0, 0, 1)


def test_failure_without_cancel_request_is_still_retried(tq, db, pool):
    """The fix above leaves ordinary failures alone: queued again while attempts remain,
    counted as retried by the completer's pre-aggregated rollup."""
    job_id = tq.enqueue("some.task", max_attempts=5)
    (row,) = claim(db, tq, ["some.task"])
    completer = Completer(pool, tq.schema, FAKE_WORKER, HeldJobs())
    completer._write([Outcome(job_id, row[6], "failed", error="boom", queue="default",
                              task="some.task", max_attempts=5)])
    assert status_of(tq, job_id) == "queued"
    assert stats_row(db, tq, "some.task") == (0, 0, 1, 0)


def test_hand_back_does_not_forget_a_cancel_request(tq, db):
    """HAND_BACK (graceful shutdown) requeued a running job with ``cancel_requested``
    still true; the next claim resets the flag, so the job ran again from the start as
    if it had never been cancelled."""
    cancelled_id = tq.enqueue("some.task")
    other_id = tq.enqueue("some.task")
    rows = claim(db, tq, ["some.task"])
    assert tq.cancel(cancelled_id) is True
    db.execute(render(tq.schema, worker_sql.HAND_BACK), {
        "worker_id": FAKE_WORKER, "ids": [r[0] for r in rows],
        "attempts": [r[6] for r in rows], "delay": 0.0, "channel": tq.channel,
    })
    assert status_of(tq, cancelled_id) == "cancelled"
    other = tq.get_job(other_id)
    assert (other.status, other.attempts) == ("queued", 0)  # handed back, not charged
    assert claim(db, tq, ["some.task"], worker_id=FAKE_WORKER + 1)[0][0] == other_id


def test_cancel_then_shutdown_with_job_still_running_ends_cancelled(
        tq, db, worker_process):
    """End to end: a task that ignores its cancel request is still running when the grace
    period of a SIGTERMed worker ends; the job must end 'cancelled', not back in the
    queue for the next worker."""
    create_runs_table(db, tq.schema)
    worker = worker_process(APP, "-c", "1", *without_option(list(FAST), "--grace"),
                            "--grace", "0.5")
    worker.wait_ready()
    job_id = tq.enqueue("sleep", args=[30])
    wait_until(lambda: runs(db, tq.schema, "started"), 10, what="job started")
    assert tq.cancel(job_id) is True
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert status_of(tq, job_id) == "cancelled", worker.output()


# -- cancel racing a claim ---------------------------------------------------------------


def _wait_for_lock_waiter(db, schema, what):
    """Wait until a statement on ``schema`` (the cancel) waits for a row lock."""
    wait_until(lambda: db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE %s", (f"%{schema}%",)).fetchone()[0] > 0, 10, what=what)


def test_cancel_racing_a_claim_requests_the_cancel(tq, db, pgtaskq_dsn):
    """CANCEL deleted 'queued' rows and flagged 'running' rows as seen by its snapshot.
    When a worker's claim held the row, CANCEL waited, then found the row 'running'
    (so no delete) while its UPDATE had already ruled the row out as 'queued': it
    returned False ("does not exist or has already finished") and the job ran to
    completion uncancelled."""
    job_id = tq.enqueue("some.task")
    result: list[bool] = []
    with psycopg.connect(pgtaskq_dsn) as claimer:  # a claim not yet committed
        assert len(claim(claimer, tq, ["some.task"])) == 1
        thread = threading.Thread(target=lambda: result.append(tq.cancel(job_id)))
        thread.start()
        _wait_for_lock_waiter(db, tq.schema, "cancel waiting for the claim's row lock")
        claimer.commit()
    thread.join(10)
    assert result == [True]
    job = tq.get_job(job_id)
    assert job.status == "running"
    assert db.execute(f'SELECT cancel_requested FROM "{tq.schema}".jobs WHERE id = %s',
                      (job_id,)).fetchone()[0] is True


def test_cancel_racing_a_requeue_cancels_the_job(tq, db, pgtaskq_dsn, pool):
    """The mirror race: the job was running when CANCEL's snapshot was taken and the
    completer requeued it (a failed attempt with attempts left) while CANCEL waited.
    CANCEL returned False and the job went on to run again."""
    job_id = tq.enqueue("some.task", max_attempts=5)
    assert len(claim(db, tq, ["some.task"])) == 1
    result: list[bool] = []
    with psycopg.connect(pgtaskq_dsn) as completer_conn:
        completer_conn.execute(  # the completer's requeue, not yet committed
            f'UPDATE "{tq.schema}".jobs SET status = %s, worker_id = NULL, '
            "lease_expires_at = NULL WHERE id = %s", ("queued", job_id))
        thread = threading.Thread(target=lambda: result.append(tq.cancel(job_id)))
        thread.start()
        _wait_for_lock_waiter(db, tq.schema, "cancel waiting for the requeue's row lock")
        completer_conn.commit()
    thread.join(10)
    assert result == [True]
    assert status_of(tq, job_id) == "cancelled"


# -- a cancel that arrives before a prefetched job starts ------------------------------------


def test_cancel_of_a_prefetched_job_before_it_starts(tq, db, worker_process):
    create_runs_table(db, tq.schema)
    worker = worker_process(APP, "-c", "1", "--prefetch", "2", *FAST)
    worker.wait_ready()
    blocker = tq.enqueue("sleep", args=[1.5])
    wait_until(lambda: runs(db, tq.schema, "started"), 10, what="blocker started")
    victim = tq.enqueue("record", args=["victim"])
    wait_until(lambda: status_of(tq, victim) == "running", 10, what="victim prefetched")
    assert tq.cancel(victim) is True
    wait_until(lambda: status_of(tq, victim) in ("cancelled", "succeeded", "failed"), 15,
               what="victim finished")
    wait_until(lambda: status_of(tq, blocker) == "succeeded", 10, what="blocker finished")
    assert runs(db, tq.schema, "ran") == []  # the victim's body never ran
    assert status_of(tq, victim) == "cancelled"
    assert worker.stop() == 0
