"""Notifications are hints (issue 13, finding 2): any role that can connect may NOTIFY on a
worker's channel, so a forged ``c:`` payload must not cancel a job, COMPLETE records
``cancelled`` only when the row says a cancel was requested, and a flood of forged ``q:``
payloads costs a worker a bounded number of claims."""

from __future__ import annotations

import time

import psycopg
from psycopg import sql
from worker_helpers import FAST, create_runs_table, runs

from pgtaskq import TaskQueue
from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql
from pgtaskq.testing import wait_until
from pgtaskq.worker.completer import complete_params
from pgtaskq.worker.hints import EMPTY_CLAIM_QUIET, NotificationHints
from pgtaskq.worker.outcome import Outcome

APP = "apps.basic:tq"
FAKE_WORKER = 626262


def worker_id_of(db: psycopg.Connection, schema: str, pid: int) -> int:
    row = db.execute(sql.SQL("SELECT id FROM {}.workers WHERE pid = %s AND stopped_at IS NULL")
                     .format(sql.Identifier(schema)), [pid]).fetchone()
    assert row is not None
    return int(row[0])


def test_a_forged_cancel_notification_does_not_cancel_a_running_job(
    tq: TaskQueue, db: psycopg.Connection, worker_process
) -> None:
    create_runs_table(db, tq.schema)
    worker = worker_process(APP, "-c", "2", *FAST)
    worker.wait_ready()
    job_id = tq.enqueue("cancellable", args=[60])
    wait_until(lambda: runs(db, tq.schema, "started"), 30, what="job started")
    worker_id = worker_id_of(db, tq.schema, worker.pid)
    for _ in range(3):  # what a role with no grant at all can send
        db.execute("SELECT pg_notify(%s, %s)", [tq.channel, f"c:{job_id}:{worker_id}"])
    # A job enqueued after the forged payloads runs only once the worker has read them.
    marker = tq.enqueue("record", args=["after the forged cancel"])
    wait_until(lambda: (job := tq.get_job(marker)) and job.status == "succeeded", 30,
               what="marker job done")
    # Asserting that something does not happen needs a window: several times
    # CANCEL_CHECK_INTERVAL, in which a forged cancel used to end the job within ~10 ms.
    assert_stays(lambda: (job := tq.get_job(job_id)) is not None and job.status == "running",
                 seconds=1.0, what="the job keeps running")
    # a real cancel still reaches the job at once
    assert tq.cancel(job_id)
    wait_until(lambda: (job := tq.get_job(job_id)) and job.status == "cancelled", 10,
               what="job cancelled")
    assert worker.stop() == 0


def assert_stays(predicate, seconds: float, what: str) -> None:
    """Check ``predicate`` stays true for ``seconds`` (polled every 20 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), f"no longer true: {what}"
        time.sleep(0.02)


def _claim_one(tq: TaskQueue, db: psycopg.Connection) -> tuple[int, int]:
    job_id = tq.enqueue("t", max_attempts=3)
    rows = db.execute(render(tq.schema, worker_sql.CLAIM), {
        "worker_id": FAKE_WORKER, "tasks": ["t"], "limit": 1, "lease": 60,
        "claimers": 0, "queues": None}).fetchall()
    assert [row[0] for row in rows] == [job_id]
    return job_id, rows[0][6]


def test_complete_records_cancelled_only_when_a_cancel_was_requested(
    tq: TaskQueue, db: psycopg.Connection
) -> None:
    forged, attempt = _claim_one(tq, db)
    outcome = Outcome(forged, attempt, "cancelled", queue="default", task="t",
                      error="Cancelled: forged")
    rows = db.execute(render(tq.schema, worker_sql.COMPLETE),
                      complete_params(FAKE_WORKER, [outcome], 1.0, 60.0)).fetchall()
    assert [row[:2] for row in rows] == [("requeued", forged)]
    job = tq.get_job(forged)
    assert job is not None and job.status == "queued" and job.attempts == 1

    real, attempt = _claim_one(tq, db)
    assert tq.cancel(real)
    outcome = Outcome(real, attempt, "cancelled", queue="default", task="t",
                      error="Cancelled: asked")
    rows = db.execute(render(tq.schema, worker_sql.COMPLETE),
                      complete_params(FAKE_WORKER, [outcome], 1.0, 60.0)).fetchall()
    assert [row[:2] for row in rows] == [("archived", real)]
    job = tq.get_job(real)
    assert job is not None and job.status == "cancelled"


def claims_by(db: psycopg.Connection, schema: str) -> int:
    db.execute("SELECT pg_stat_clear_snapshot()")
    row = db.execute(
        """SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions
           WHERE schemaname = %s AND funcname = 'claim_jobs'""", [schema]).fetchone()
    return int(row[0])


def test_a_flood_of_forged_wake_ups_is_rate_limited(
    tq: TaskQueue, db: psycopg.Connection, worker_process
) -> None:
    worker = worker_process(APP, "-c", "2", "--poll-interval", "5",
                            env={"PGOPTIONS": "-c track_functions=pl"})
    worker.wait_ready()
    sent, started = 0, time.monotonic()
    while time.monotonic() - started < 2.0:
        db.execute("SELECT pg_notify(%s, 'q:default') FROM generate_series(1, 20)",
                   [tq.channel])
        sent += 20
    assert worker.stop() == 0  # its sessions end: their function statistics are flushed
    calls = wait_until(lambda: claims_by(db, tq.schema), 10, what="claim statistics")
    elapsed = time.monotonic() - started
    # one claim per quiet period at most, plus the start-up claim and polls
    assert calls <= elapsed / EMPTY_CLAIM_QUIET + 5, (calls, sent)
    assert sent > 5 * calls


def test_hints_release_cancel_look_ups_at_most_every_interval() -> None:
    hints = NotificationHints(cancel_interval=0.1, quiet=0.05)
    hints.hint_cancel({1, 2})
    assert hints.cancels_to_check(10.0) == {1, 2}
    hints.hint_cancel({3})
    assert hints.cancels_to_check(10.05) == set()
    assert hints.deadline() == 10.1
    assert hints.cancels_to_check(10.1) == {3}
    assert hints.deadline() is None


def test_hints_quiet_period_after_an_empty_notified_claim() -> None:
    hints = NotificationHints(cancel_interval=0.1, quiet=0.05)
    assert hints.notified(1.0)
    hints.claimed(1.0, found=3, woken_by_notification=True)
    assert hints.notified(1.001)  # jobs were found: no quiet period
    hints.claimed(1.001, found=0, woken_by_notification=True)
    assert not hints.notified(1.02)
    assert hints.deadline() == 1.051
    assert not hints.pending_claim_due(1.03)
    assert hints.pending_claim_due(1.051)
    assert not hints.pending_claim_due(1.06)  # served once
    hints.claimed(2.0, found=0, woken_by_notification=False)  # a poll: no quiet period
    assert hints.notified(2.001)
