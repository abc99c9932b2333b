"""Regression tests for correctness findings of the job state machine and worker review.

Each test states the bug it pins down. Tests of bugs whose fix belongs in modules under
concurrent edit were marked ``xfail(strict=True)`` with the fix in the reason; the marks
go as the fixes land (the remaining ones still describe open problems).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import psycopg
import pytest
from worker_helpers import FAST, create_runs_table, runs

from benchmarks.claim_plan import explain_claim
from pgtaskq import defaults
from pgtaskq.pool import LivenessCheck, open_pool
from pgtaskq.sql import registry as registry_sql
from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql
from pgtaskq.testing import wait_until
from pgtaskq.worker.completer import Completer
from pgtaskq.worker.held import HeldJobs
from pgtaskq.worker.outcome import Outcome

APP = "apps.basic:tq"
FAKE_WORKER = 424242


def status_of(tq, job_id):
    job = tq.get_job(job_id)
    return job.status if job else None


def claim(conn, tq, tasks, limit=10, worker_id=FAKE_WORKER, queues=None):
    """Lease jobs with the worker's own claim statement, as worker ``worker_id``."""
    return conn.execute(render(tq.schema, worker_sql.CLAIM), {
        "worker_id": worker_id, "tasks": tasks, "limit": limit, "lease": 60,
        "claimers": defaults.CLAIMERS, "queues": queues,
    }).fetchall()


def stats_row(db, tq, task):
    return db.execute(
        f'SELECT sum(succeeded), sum(failed), sum(retried), sum(cancelled) '
        f'FROM "{tq.schema}".stats_minute WHERE task = %s', (task,)).fetchone()


def _without(options, name):
    """``options`` (flag, value pairs) without ``name`` and its value."""
    pairs = list(zip(options[::2], options[1::2], strict=True))
    return [item for pair in pairs if pair[0] != name for item in pair]


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
    worker = worker_process(APP, "-c", "1", *_without(list(FAST), "--grace"),
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


# -- claim plan at a million rows ----------------------------------------------------------


def _max_rows_removed(plan):
    here = plan.get("Rows Removed by Filter", 0)
    return max([here] + [_max_rows_removed(p) for p in plan.get("Plans", [])])


def test_single_queue_claim_does_not_scan_other_queues(tq, db):
    db.execute(f'INSERT INTO "{tq.schema}".jobs (queue, task, max_attempts) '
               "SELECT 'big', 't', 1 FROM generate_series(1, 200000)")
    db.execute(f'INSERT INTO "{tq.schema}".jobs (queue, task, max_attempts) '
               "SELECT 'small', 't', 1 FROM generate_series(1, 5)")
    db.execute(f'ANALYZE "{tq.schema}".jobs')
    plan = explain_claim(db, tq.schema, tasks=["t"], queues=["small"], limit=5)
    assert _max_rows_removed(plan) < 1000
    assert _find_node(plan, "Index Scan")["Index Name"] == "jobs_ready_by_queue"


# -- main loop wake-ups ----------------------------------------------------------------------


def test_notify_while_full_is_not_lost_when_prefetch_shrinks(tq, db, worker_process):
    create_runs_table(db, tq.schema)
    worker = worker_process(APP, "-c", "1", *_without(list(FAST), "--poll-interval"),
                            "--poll-interval", "60")
    worker.wait_ready()
    # many instant jobs: the adaptive prefetch grows to its maximum (4 per slot)
    ids = tq.enqueue_many("noop", [{} for _ in range(50)])
    wait_until(lambda: all(status_of(tq, i) == "succeeded" for i in ids), 20,
               what="noop jobs done")
    # three 1-second jobs leased by one claim (3 of 5: no backlog); after the first one
    # the average job time makes the prefetch 0, so 2 held jobs exceed the capacity of 1
    tq.enqueue_many("sleep", [{"args": [1]} for _ in range(3)])
    wait_until(lambda: len(runs(db, tq.schema, "started")) >= 2, 15,
               what="second sleep job started")
    late = tq.enqueue("record", args=["late"])  # its NOTIFY finds no room
    # the three sleeps end about 2 s from now; the poll is a minute away
    wait_until(lambda: status_of(tq, late) == "succeeded", 10,
               what="job enqueued while the worker was full")
    assert worker.stop() == 0


def _cpu_seconds(pid):
    """User + system CPU time of process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_used_over(pid, seconds):
    """CPU seconds process ``pid`` uses during the next ``seconds`` of wall time."""
    before = _cpu_seconds(pid)
    deadline = time.monotonic() + seconds
    wait_until(lambda: time.monotonic() >= deadline, 5, what=f"{seconds} seconds")
    return _cpu_seconds(pid) - before


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_deferred_jobs_of_other_queues_do_not_make_the_worker_spin(tq, db, worker_process):
    create_runs_table(db, tq.schema)
    worker = worker_process(APP, "-c", "2", "--queue", "a", *FAST)
    worker.wait_ready()
    tq.enqueue_many("noop", [{"queue": "b", "delay": 0.1 * n} for n in range(1, 31)])
    spent = _cpu_used_over(worker.pid, 3.0)
    assert spent < 0.5, f"worker used {spent:.2f}s of CPU in 3s while it had nothing to do"
    assert worker.stop() == 0


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_claim_backoff_does_not_spin(tq, db, worker_process):
    create_runs_table(db, tq.schema)
    worker = worker_process(APP, "-c", "1", "--prefetch", "0", *FAST)
    worker.wait_ready()
    tq.enqueue_many("sleep", [{"args": [1]} for _ in range(3)])  # claims come back full
    wait_until(lambda: runs(db, tq.schema, "started"), 10, what="first job started")
    jobs = f'"{tq.schema}".jobs'
    db.execute(f"ALTER TABLE {jobs} RENAME TO jobs_away")  # every claim now fails
    try:
        wait_until(lambda: "leasing jobs failed" in worker.output(), 10,
                   what="a failed claim")
        spent = _cpu_used_over(worker.pid, 2.0)
    finally:
        db.execute(f'ALTER TABLE "{tq.schema}".jobs_away RENAME TO jobs')
    assert spent < 0.5, f"worker used {spent:.2f}s of CPU in 2s while backing off"
    assert worker.stop() == 0


# -- slot threads must survive whatever a task returns ---------------------------------------


@pytest.mark.parametrize("task", ["deep_result", "unprintable_result"])
def test_result_that_breaks_json_does_not_kill_the_slot(tq, worker_process, task):
    worker = worker_process("apps.review_app:tq", "-c", "1", *FAST)
    worker.wait_ready()
    bad = tq.enqueue(task)
    wait_until(lambda: status_of(tq, bad) in ("succeeded", "failed"), 10,
               what=f"{task} job finished")
    after = tq.enqueue("plain", args=[1])
    wait_until(lambda: status_of(tq, after) == "succeeded", 10,
               what="next job on the same (only) slot")
    assert worker.stop() == 0


# -- NOTIFY payloads stay under PostgreSQL's 8000-byte limit ----------------------------------

MANY_QUEUES = [f"tenant-{n:06d}-background" for n in range(600)]  # 25 bytes each
"""Per-tenant queues: one statement's distinct queues joined with ',' exceed 8000 bytes."""


def _notified_queues(listen_conn):
    queues: set[str] = set()
    for notify in listen_conn.notifies(timeout=0.5):
        kind, _, rest = notify.payload.partition(":")
        assert kind == "q" and len(notify.payload) < 8000
        queues.update(rest.split(","))
    return queues


@pytest.fixture
def listen_conn(tq, pgtaskq_dsn):
    with psycopg.connect(pgtaskq_dsn, autocommit=True) as conn:
        conn.execute(f'LISTEN "{tq.channel}"')
        yield conn


def test_rescue_of_jobs_in_many_queues(tq, db, listen_conn):
    """RESCUE woke workers with ONE pg_notify listing every distinct queue of its batch
    (up to 1,000 jobs); past 8000 bytes pg_notify raises "payload string too long", the
    whole statement fails, and it fails again on every pass: expired jobs stayed
    'running' for ever."""
    tq.enqueue_many("some.task", [{"queue": q} for q in MANY_QUEUES])
    db.execute(f'UPDATE "{tq.schema}".jobs SET status = %s, worker_id = %s, attempts = 1, '
               "lease_expires_at = now() - interval '1 minute'", ("running", FAKE_WORKER))
    _notified_queues(listen_conn)  # drop the enqueue's notifications
    rows = db.execute(render(tq.schema, worker_sql.RESCUE),
                      {"limit": 1000, "channel": tq.channel}).fetchall()
    assert len(rows) == len(MANY_QUEUES)
    assert db.execute(f'SELECT count(*) FROM "{tq.schema}".jobs WHERE status = %s',
                      ("queued",)).fetchone()[0] == len(MANY_QUEUES)
    assert _notified_queues(listen_conn) == set(MANY_QUEUES)


def test_enqueue_many_into_many_queues(tq, listen_conn):
    """ENQUEUE_MANY: the same single NOTIFY made a bulk enqueue across a few hundred
    queues fail outright."""
    ids = tq.enqueue_many("some.task", [{"queue": q} for q in MANY_QUEUES])
    assert len(ids) == len(MANY_QUEUES)
    assert _notified_queues(listen_conn) == set(MANY_QUEUES)


def test_enqueue_many_with_dedupe_keys_into_many_queues(tq, listen_conn):
    ids = tq.enqueue_many("some.task", [{"queue": q, "dedupe_key": q} for q in MANY_QUEUES])
    assert len(set(ids)) == len(MANY_QUEUES)
    assert _notified_queues(listen_conn) == set(MANY_QUEUES)


def test_hand_back_of_jobs_in_many_queues(tq, db, listen_conn):
    """HAND_BACK: same payload; its failure left the jobs running until lease expiry."""
    tq.enqueue_many("some.task", [{"queue": q} for q in MANY_QUEUES])
    rows = claim(db, tq, ["some.task"], limit=len(MANY_QUEUES))
    _notified_queues(listen_conn)
    db.execute(render(tq.schema, worker_sql.HAND_BACK), {
        "worker_id": FAKE_WORKER, "ids": [r[0] for r in rows],
        "attempts": [r[6] for r in rows], "delay": 0.0, "channel": tq.channel,
    })
    assert db.execute(f'SELECT count(*) FROM "{tq.schema}".jobs WHERE status = %s',
                      ("queued",)).fetchone()[0] == len(MANY_QUEUES)
    assert _notified_queues(listen_conn) == set(MANY_QUEUES)


# -- the main loop's wait must work with any file descriptor ----------------------------------


def test_listener_waits_on_descriptors_above_1024(tq, db, pgtaskq_dsn):
    """Listener.wait used select(), which raises ValueError for a descriptor >= 1024: a
    worker whose tasks or host program hold many files or sockets had its main loop
    die when the LISTEN connection (or the self-pipe) got a high descriptor."""
    import resource

    from pgtaskq.worker.listener import Listener

    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1200:
        pytest.skip("needs a descriptor limit of 1200 or more")
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        listener = Listener(pgtaskq_dsn, tq.channel)
        try:
            assert listener.connect()
            assert listener._write_fd >= 1024  # the self-pipe, too
            db.execute("SELECT pg_notify(%s, 'q:high')", (tq.channel,))
            events = wait_until(lambda: listener.wait(0.5).queues, 5, what="notification")
            assert events == {"high"}
            listener.wake()
            assert listener.wait(5.0).queues == set()  # the self-pipe wakes it too
        finally:
            listener.close()
    finally:
        for fd in filler:
            os.close(fd)


# -- the next-deferred look-up stays cheap whatever the priorities ---------------------------


def _find_node(plan, node_type):
    if plan.get("Node Type") == node_type:
        return plan
    for child in plan.get("Plans", []):
        found = _find_node(child, node_type)
        if found is not None:
            return found
    return None


def test_next_deferred_lookup_is_bounded_with_many_distinct_priorities(tq, db):
    """NEXT_DEFERRED walked every distinct priority of the queued jobs: 6.6 s with 1M
    queued jobs of random priorities (632k distinct), run by the worker's main thread at
    every poll and after every under-full claim, stalling claims, cancels and timeouts."""
    db.execute(f'INSERT INTO "{tq.schema}".jobs (queue, task, max_attempts, priority, run_at) '
               "SELECT 'default', 't', 1, g, now() - interval '1 minute' "
               "FROM generate_series(1, 20000) AS g")
    later = tq.enqueue("t", priority=30000, delay=3600)
    db.execute(f'ANALYZE "{tq.schema}".jobs')
    query = render(tq.schema, worker_sql.NEXT_DEFERRED)
    (seconds_until, db_now) = db.execute(
        "SELECT (" + query.strip() + "), clock_timestamp()").fetchone()
    expected = (tq.get_job(later).run_at - db_now).total_seconds()
    assert abs(seconds_until - expected) < 1.0  # the highest priorities are still seen
    (plan,) = db.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query).fetchone()[0]
    plan = plan if isinstance(plan, dict) else json.loads(plan)
    walk = _find_node(plan["Plan"], "Recursive Union")
    assert walk is not None and walk["Actual Rows"] <= 300


def test_claim_does_not_walk_deferred_jobs_of_higher_priority(tq, db):
    """jobs_ready is (priority DESC, run_at, id): the claim's run_at <= now() is no range
    condition when deferred jobs sit at a higher priority than the runnable ones, so every
    claim walked all of them (203 ms per claim with 1M jobs at priority 5 due tomorrow on
    PostgreSQL 15; a strict xfail there until issue 12). A worker's sweep now parks them
    out of jobs_ready (pgtaskq.worker.parker); run here as the parker thread runs it."""
    db.execute(f'INSERT INTO "{tq.schema}".jobs (queue, task, max_attempts, priority, run_at) '
               "SELECT 'default', 't', 1, 5, now() + interval '1 day' "
               "FROM generate_series(1, 100000)")
    tq.enqueue_many("t", [{} for _ in range(5)])
    # a live worker registers task "t", so only the deferred jobs are parked
    (worker_id,) = db.execute(
        f'INSERT INTO "{tq.schema}".workers (host, pid, concurrency, pgtaskq_version) '
        "VALUES ('test', 1, 1, 'test') RETURNING id").fetchone()
    db.execute(f'INSERT INTO "{tq.schema}".worker_tasks '
               "(worker_id, task, queue, priority, max_attempts) "
               "VALUES (%s, 't', 'default', 0, 1)", (worker_id,))
    sweep = render(tq.schema, registry_sql.SWEEP)
    params = {"window": 1000, "lost_beats": defaults.WORKER_LOST_AFTER_BEATS,
              "lost_min": defaults.WORKER_LOST_AFTER_MIN}
    parked = 0
    while rows := db.execute(sweep, params).fetchall():
        parked += sum(row[2] for row in rows)
    assert parked == 100_000
    db.execute(f'VACUUM (ANALYZE) "{tq.schema}".jobs')  # as the parker asks after parking
    plan = explain_claim(db, tq.schema, tasks=["t"], limit=5)
    scan = _find_node(plan, "Index Scan")
    assert scan["Shared Hit Blocks"] + scan["Shared Read Blocks"] < 50


@pytest.mark.parametrize("queues", [None, ["default"], ["other", "default"]],
                         ids=["any queue", "one queue", "several queues"])
def test_claim_order_across_priorities_with_deferred_jobs_between(tq, db, queues):
    def add(priority, run_at, count):
        rows = db.execute(
            f'INSERT INTO "{tq.schema}".jobs (queue, task, max_attempts, priority, run_at) '
            f"SELECT 'default', 't', 1, %s, now() + %s::interval * g "
            f"FROM generate_series(1, %s) AS g RETURNING id", (priority, run_at, count))
        return [row[0] for row in rows]

    add(9, "1 hour", 10)  # not due
    high = add(5, "-1 second", 3)  # due, the latest enqueued ran at the earliest
    add(3, "1 hour", 10)  # not due
    low = add(1, "-1 minute", 4)
    params = {"worker_id": FAKE_WORKER, "tasks": ["t"], "lease": 60, "queues": queues,
              "claimers": defaults.CLAIMERS}
    statement = render(tq.schema, worker_sql.CLAIM)
    first = [row[0] for row in db.execute(statement, {**params, "limit": 5})]
    assert first == high[::-1] + low[::-1][:2]
    rest = [row[0] for row in db.execute(statement, {**params, "limit": 100})]
    assert rest == low[::-1][2:]


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


# -- one bad outcome must not wedge the completer ---------------------------------------------


@pytest.mark.parametrize("delay", ["inf", "nan"])
def test_retry_with_an_infinite_delay_does_not_wedge_the_completer(tq, worker_process, delay):
    """``Retry(delay=float('inf'))`` (or nan) passes Retry's check (not < 0); COMPLETE's
    now() + make_interval(secs => inf) raises "interval out of range", the whole batch
    fails, and the completer retries that batch for ever: every job of the batch stays
    'running' (heartbeated), and the worker stops leasing once outcomes pile up."""
    worker = worker_process("apps.review_app:tq", "-c", "1", *FAST)
    worker.wait_ready()
    bad = tq.enqueue("retry_forever", args=[delay])
    after = tq.enqueue("plain", args=[1])
    wait_until(lambda: status_of(tq, after) == "succeeded", 10, what="next outcome written")
    if delay == "inf":  # queued again, for "never" (about 31 years)
        job = wait_until(lambda: (j := tq.get_job(bad)).status == "queued" and j, 10)
        assert (job.attempts, job.run_at.year >= 2050) == (1, True)
    else:  # nan: the backoff applies, and the attempts run out
        wait_until(lambda: status_of(tq, bad) == "failed", 10, what="retries used up")
    assert worker.stop() == 0


@pytest.mark.parametrize("task", ["nul_result", "nul_error"])
def test_outcome_with_a_nul_character_does_not_wedge_the_completer(tq, worker_process, task):
    worker = worker_process("apps.review_app:tq", "-c", "1", *FAST)
    worker.wait_ready()
    bad = tq.enqueue(task, max_attempts=1)  # by name: the app's max_attempts is not known here
    after = tq.enqueue("plain", args=[1])
    wait_until(lambda: status_of(tq, after) == "succeeded", 10, what="next outcome written")
    wait_until(lambda: status_of(tq, bad) in ("succeeded", "failed"), 10, what="bad stored")
    if task == "nul_error":
        assert "b\\x00d" in tq.get_job(bad).last_error  # NUL shown escaped, not lost
    assert worker.stop() == 0


# -- clocks: the worker's and the database's ---------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_worker_clock_ahead_of_the_database_does_not_spin(tq, worker_process):
    worker = worker_process("apps.review_skewed:tq", "-c", "2", "--queue", "a", *FAST)
    worker.wait_ready()
    tq.enqueue("plain", queue="b", delay=4.0)  # deferred, in a queue this worker skips
    spent = _cpu_used_over(worker.pid, 3.0)
    assert spent < 0.5, f"worker used {spent:.2f}s of CPU in 3s while it had nothing to do"
    assert worker.stop() == 0


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_due_deferred_job_during_claim_backoff_does_not_spin(tq, db, worker_process):
    """A deferred job coming due while claims fail (the database is away) made the loop's
    timeout 0 for the whole backoff: the due time was a deadline, the backoff was not."""
    create_runs_table(db, tq.schema)
    # enqueued first: the worker's first (short) claim looks up when it comes due
    tq.enqueue("record", args=["later"], delay=2.0)
    worker = worker_process(APP, "-c", "1", *FAST)
    worker.wait_ready()
    db.execute(f'ALTER TABLE "{tq.schema}".jobs RENAME TO jobs_away')  # claims now fail
    try:
        wait_until(lambda: "leasing jobs failed" in worker.output(), 10, what="failed claim")
        spent = _cpu_used_over(worker.pid, 2.0)
    finally:
        db.execute(f'ALTER TABLE "{tq.schema}".jobs_away RENAME TO jobs')
    assert spent < 0.5, f"worker used {spent:.2f}s of CPU in 2s while backing off"
    assert worker.stop() == 0
