"""The worker as users run it: real ``pgtaskq worker`` processes, real signals, real
PostgreSQL. Tasks are in tests/apps/basic.py and log each run to a table."""

from __future__ import annotations

import itertools
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest
from worker_helpers import FAST, runs, status_of

from pgtaskq.sql import fragments
from pgtaskq.testing import wait_until

APP = "apps.basic:tq"

BOTH_POOLS = pytest.mark.parametrize(
    "pool", [(), ("--pool", "process")], ids=["threads", "processes"])
"""Tests whose behaviour must not depend on the pool: worker options ``*pool``."""




def all_final(tq, ids, status="succeeded"):
    return lambda: all(status_of(tq, i) == status for i in ids)


def test_two_workers_run_every_job_exactly_once(tq, db, runs_table, worker_process):
    workers = [worker_process(APP, "-c", "4", *FAST) for _ in range(2)]
    for w in workers:
        w.wait_ready()
    ids = tq.enqueue_many("record", [{"args": [n]} for n in range(2000)])
    wait_until(lambda: len(runs(db, tq.schema, "ran")) >= 2000, 60, what="2000 runs")
    wait_until(lambda: db.execute(
        f'SELECT count(*) FROM "{tq.schema}".job_history WHERE status = %s',
        ("succeeded",)).fetchone()[0] == 2000, 20, what="2000 acks")
    rows = runs(db, tq.schema, "ran")
    assert sorted(r[0] for r in rows) == sorted(ids)  # each job once, none twice
    assert {r[4] for r in rows} == {w.pid for w in workers}  # both took part
    assert db.execute(f'SELECT count(*) FROM "{tq.schema}".jobs').fetchone()[0] == 0
    for w in workers:
        assert w.stop() == 0


@BOTH_POOLS
def test_priority_then_fifo_with_one_slot(tq, db, runs_table, worker_process, pool):
    ids = [tq.enqueue("record", args=[f"p{p}-{n}"], priority=p)
           for n in range(3) for p in (0, 5, -1)]
    worker = worker_process(APP, "-c", "1", *FAST, *pool)
    wait_until(all_final(tq, ids), 20)
    values = [r[3] for r in runs(db, tq.schema, "ran")]
    assert values == [f"p5-{n}" for n in range(3)] + [f"p0-{n}" for n in range(3)] + \
        [f"p-1-{n}" for n in range(3)]
    assert worker.stop() == 0


@BOTH_POOLS
def test_delay_and_run_at_are_respected(tq, db, runs_table, worker_process, pool):
    worker = worker_process(APP, "-c", "2", *FAST, *pool)
    worker.wait_ready()
    before = datetime.now(timezone.utc)
    delayed = tq.enqueue("record", args=["delayed"], delay=1.0)
    at = tq.enqueue("record", args=["at"], run_at=before + timedelta(seconds=1.5))
    wait_until(all_final(tq, [delayed, at]), 10)
    job, job_at = tq.get_job(delayed), tq.get_job(at)
    assert job.started_at >= before + timedelta(seconds=1.0)
    assert job_at.started_at >= before + timedelta(seconds=1.5)
    # The worker learns of deferred jobs and wakes for them, well before the poll fallback
    # would matter; allow generous scheduling noise.
    assert job.started_at <= before + timedelta(seconds=3)
    worker.stop()


@BOTH_POOLS
def test_failures_retry_with_growing_delays_then_fail(tq, db, runs_table, worker_process, pool):
    worker = worker_process(APP, "-c", "2", *FAST, *pool)
    job_id = tq.enqueue("fail", args=["kaput"], max_attempts=4)
    wait_until(lambda: status_of(tq, job_id) == "failed", 20)
    job = tq.get_job(job_id)
    assert job.attempts == 4
    assert "RuntimeError: kaput" in job.last_error
    assert "Traceback" in job.last_error
    times = [r[0] for r in db.execute(
        f'SELECT at FROM "{tq.schema}".test_runs WHERE job_id = %s ORDER BY id',
        (job_id,)).fetchall()]
    assert len(times) == 4
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    # backoff 0.05 * 2^(n-1) with +-25% jitter, capped at 0.2 s
    assert all(gap >= 0.035 for gap in gaps), gaps
    worker.stop()


def test_failed_attempts_keep_the_latest_hundred(tq, db, runs_table, worker_process):
    """A job may allow any number of attempts: its failed_attempts keeps the latest
    ``FAILED_ATTEMPTS_KEPT``, so the row cannot grow without bound."""
    kept = fragments.FAILED_ATTEMPTS_KEPT
    job_id = tq.enqueue("fail", args=["again"], max_attempts=kept + 2)
    # as if the job had already failed `kept` times
    db.execute(
        f'UPDATE "{tq.schema}".jobs SET attempts = %s, failed_attempts = ('
        "SELECT jsonb_agg(jsonb_build_object('attempt', n, 'worker_id', 0, 'error', 'old', "
        "'at', now()) ORDER BY n) FROM generate_series(1, %s) AS n) WHERE id = %s",
        (kept, kept, job_id))
    worker = worker_process(APP, "-c", "1", *FAST)
    wait_until(lambda: status_of(tq, job_id) == "failed", 20)
    worker.stop()
    attempts = tq.get_job(job_id).failed_attempts
    assert len(attempts) == kept
    assert [a["attempt"] for a in attempts] == list(range(3, kept + 3))
    assert "RuntimeError: again" in attempts[-1]["error"]


@BOTH_POOLS
def test_retry_exception_and_bad_results_do_not_hurt_the_worker(
        tq, db, runs_table, worker_process, pool):
    worker = worker_process(APP, "-c", "2", *FAST, *pool)
    retried = tq.enqueue("retry_then_succeed", args=[2], max_attempts=5)
    exits = tq.enqueue("system_exit", max_attempts=1)
    weird = tq.enqueue("unserialisable")
    wait_until(lambda: status_of(tq, retried) == "succeeded"
               and status_of(tq, exits) == "failed"
               and status_of(tq, weird) == "succeeded", 20)
    assert tq.get_job(retried).attempts == 3
    assert tq.get_job(retried).result == 3
    assert "SystemExit" in tq.get_job(exits).last_error
    assert tq.get_job(weird).result == "{1, 2, 3}"
    assert "not JSON-serialisable" in worker.output()
    ok = tq.enqueue("record", args=["still alive"])
    wait_until(lambda: status_of(tq, ok) == "succeeded", 10)
    assert worker.stop() == 0


def test_sigkill_mid_job_job_finishes_elsewhere_on_second_attempt(
        tq, db, runs_table, worker_process):
    victim = worker_process(APP, "-c", "1", *FAST)
    victim.wait_ready()
    job_id = tq.enqueue("sleep", args=[1.0])
    wait_until(lambda: runs(db, tq.schema, "started"), 10)
    victim.kill()
    survivor = worker_process(APP, "-c", "1", *FAST)
    wait_until(lambda: status_of(tq, job_id) == "succeeded", 20)
    job = tq.get_job(job_id)
    assert job.attempts == 2
    started = runs(db, tq.schema, "started")
    assert [r[4] for r in started] == [victim.pid, survivor.pid]
    assert survivor.stop() == 0


def test_job_that_kills_its_worker_ends_failed(tq, db, runs_table, worker_process):
    job_id = tq.enqueue("kill_self", max_attempts=2)
    deaths = 0
    deadline = time.monotonic() + 40
    while status_of(tq, job_id) != "failed":
        assert time.monotonic() < deadline, "job never failed"
        worker = worker_process(APP, "-c", "1", *FAST)
        wait_until(lambda w=worker: w.process.poll() is not None
                   or status_of(tq, job_id) == "failed", 15)
        if worker.process.poll() is not None:
            deaths += 1
        else:
            worker.stop()
    assert deaths == 2
    job = tq.get_job(job_id)
    assert job.attempts == 2
    assert "lease expired" in job.last_error


@BOTH_POOLS
def test_sigterm_mid_job_lets_it_finish_and_exits_zero(tq, db, runs_table, worker_process, pool):
    worker = worker_process(APP, "-c", "2", *FAST, *pool)
    worker.wait_ready()
    job_id = tq.enqueue("sleep", args=[1.0])
    wait_until(lambda: runs(db, tq.schema, "started"), 10)
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert status_of(tq, job_id) == "succeeded"
    assert tq.get_job(job_id).attempts == 1
    output = worker.output()
    assert "stopping" in output and "stopped" in output


@BOTH_POOLS
def test_grace_exceeded_hands_job_back_without_charging_an_attempt(
        tq, db, runs_table, worker_process, pool):
    worker = worker_process(APP, "-c", "1", *FAST, "--grace", "0.3", *pool)
    worker.wait_ready()
    job_id = tq.enqueue("sleep", args=[3.0])
    wait_until(lambda: runs(db, tq.schema, "started"), 10)
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    job = tq.get_job(job_id)
    assert (job.status, job.attempts) == ("queued", 0)
    assert "handing back 1 running jobs" in worker.output()


@BOTH_POOLS
def test_second_sigint_exits_at_once(tq, db, runs_table, worker_process, pool):
    worker = worker_process(APP, "-c", "1", *FAST, "--grace", "60", *pool)
    worker.wait_ready()
    tq.enqueue("sleep", args=[30])
    wait_until(lambda: runs(db, tq.schema, "started"), 10)
    worker.signal(signal.SIGINT)
    wait_until(lambda: "stopping" in worker.output(), 5)
    started = time.monotonic()
    worker.signal(signal.SIGINT)
    assert worker.wait(5) != 0
    assert time.monotonic() - started < 3


@BOTH_POOLS
def test_cancel_running_job_is_seen_within_two_seconds(tq, db, runs_table, worker_process, pool):
    worker = worker_process(APP, "-c", "1", *FAST, *pool)
    worker.wait_ready()
    job_id = tq.enqueue("cancellable", args=[30])
    wait_until(lambda: status_of(tq, job_id) == "running"
               and runs(db, tq.schema, "started"), 10)
    asked = time.monotonic()
    assert tq.cancel(job_id) is True
    wait_until(lambda: status_of(tq, job_id) == "cancelled", 5)
    assert time.monotonic() - asked < 2
    assert "Cancelled" in tq.get_job(job_id).last_error
    assert worker.stop() == 0


def test_poll_only_mode_runs_jobs_without_notify(tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "2", *FAST, "--poll-only")
    worker.wait_ready()
    assert "poll-only" in worker.output()
    ids = tq.enqueue_many("record", [{"args": [n]} for n in range(20)])
    wait_until(all_final(tq, ids), 10)
    assert worker.stop() == 0


def test_timeout_fails_attempt_and_never_runs_twice_at_once(
        tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "2", *FAST)
    job_id = tq.enqueue("slow_timeout", args=[1.0], max_attempts=2)
    wait_until(lambda: status_of(tq, job_id) == "failed", 20)
    job = tq.get_job(job_id)
    assert job.attempts == 2
    assert "timeout" in job.last_error
    events = [r[2] for r in runs(db, tq.schema)]
    # the second attempt starts only after the first run's function returned
    assert events == ["started", "finished", "started", "finished"]
    assert worker.stop() == 0


def test_worker_serves_only_its_queues(tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "2", *FAST, "--queue", "mail")
    worker.wait_ready()
    other = tq.enqueue("record", args=["other"], queue="reports")
    mine = tq.enqueue("record", args=["mine"], queue="mail")
    wait_until(lambda: status_of(tq, mine) == "succeeded", 10)
    assert status_of(tq, other) == "queued"
    assert worker.stop() == 0


def test_unknown_task_stays_queued(tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "2", *FAST)
    worker.wait_ready()
    unknown = tq.enqueue("nobody.knows.this")
    known = tq.enqueue("record", args=["known"])
    wait_until(lambda: status_of(tq, known) == "succeeded", 10)
    assert status_of(tq, unknown) == "queued"
    worker.stop()


def test_worker_registry_row(tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "3", *FAST)
    worker.wait_ready()
    row = db.execute(f'SELECT pid, concurrency, stopped_at FROM "{tq.schema}".workers'
                     ).fetchone()
    assert row == (worker.pid, 3, None)
    worker.stop()
    assert db.execute(f'SELECT stopped_at IS NOT NULL FROM "{tq.schema}".workers'
                      ).fetchone()[0]


@pytest.mark.parametrize("app, message", [
    ("no_such_module:tq", "cannot import"),
    ("apps.basic:nothing", "has no attribute"),
    ("apps.basic:record", "not a pgtaskq.TaskQueue"),
])
def test_bad_app_is_a_one_line_error(tq, worker_process, app, message):
    worker = worker_process(app)
    assert worker.wait(15) == 2
    output = worker.output()
    assert message in output
    assert "Traceback" not in output


def test_result_jsonb_refuses_is_stored_as_a_repr_and_the_job_succeeds(
        tq, db, runs_table, worker_process):
    """A result jsonb refuses (a lone surrogate) was recorded as a failed attempt; the
    attempt succeeded, so it is recorded so, with a repr PostgreSQL can store (issue 12)."""
    worker = worker_process(APP, "-c", "1", *FAST)
    worker.wait_ready()
    bad = tq.enqueue("surrogate_result", max_attempts=1)
    after = tq.enqueue("record", args=["after"])
    wait_until(lambda: status_of(tq, after) == "succeeded", 15, what="next outcome written")
    wait_until(lambda: status_of(tq, bad) == "succeeded", 10)
    assert tq.get_job(bad).result == "'\\ud800'"
    assert "cannot store as JSON" in worker.output()
    assert worker.stop() == 0
