"""The main loop's wake-ups and waits (``pgtaskq.worker.loop``, ``listener``, ``due``): no
lost NOTIFY, no spinning, any file descriptor, any clock skew.
"""

from __future__ import annotations

import os
import time

import pytest
from worker_helpers import (
    FAST,
    create_runs_table,
    runs,
    status_of,
    without_option,
)

from pgtaskq.testing import wait_until

APP = "apps.basic:tq"


# -- main loop wake-ups ----------------------------------------------------------------------


def test_notify_while_full_is_not_lost_when_prefetch_shrinks(tq, db, worker_process):
    create_runs_table(db, tq.schema)
    worker = worker_process(APP, "-c", "1", *without_option(list(FAST), "--poll-interval"),
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
