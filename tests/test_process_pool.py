"""The process pool (``--pool process``) as users run it: real worker processes whose
slots are child processes, real timeouts, crashes and signals. Tasks are in
tests/apps/process_app.py (the basic app's tasks and more) and log each run to a table."""

from __future__ import annotations

import os
import signal
import time

import pytest
from worker_helpers import FAST, runs, status_of

from pgtaskq import Worker
from pgtaskq.errors import ConfigurationError
from pgtaskq.testing import wait_until

APP = "apps.process_app:tq"
PROCESS = ("--pool", "process", "--kill-grace", "1")




def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            own = [int(p) for p in f.read().split()]
    except OSError:
        return []
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return sorted(set(found + own))


def test_hanging_job_is_stopped_at_its_timeout_and_its_slot_runs_the_next(
        tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "1", *FAST, *PROCESS)
    worker.wait_ready()
    started = time.monotonic()
    job_id = tq.enqueue("hang", args=[40], max_attempts=1)
    wait_until(lambda: status_of(tq, job_id) == "failed", 15)
    elapsed = time.monotonic() - started
    # timeout 1 s + kill grace 1 s + SIGTERM: well under the 40 s the task sleeps
    assert elapsed < 6, elapsed
    job = tq.get_job(job_id)
    assert job.last_error.startswith("TimeoutError"), job.last_error
    assert "stopped (SIGTERM)" in job.last_error
    # failed within timeout + kill grace + 1 s of its start
    assert (job.finished_at - job.started_at).total_seconds() <= 1 + 1 + 1
    next_id = tq.enqueue("whoami", args=["after"])
    wait_until(lambda: status_of(tq, next_id) == "succeeded", 10)
    hung_pid = int(runs(db, tq.schema, "started")[0][3])
    ran_pid = int(runs(db, tq.schema, "ran")[0][3].split(":")[0])
    assert ran_pid != hung_pid  # a fresh child
    assert ran_pid != worker.pid
    assert not os.path.exists(f"/proc/{hung_pid}")
    assert runs(db, tq.schema, "finished") == []
    assert [r[3] for r in runs(db, tq.schema, "on_failure")] == ["TimeoutError"]
    assert worker.stop() == 0


def test_timed_out_job_is_retried_and_never_runs_twice_at_once(
        tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "2", *FAST, *PROCESS)
    job_id = tq.enqueue("hang", args=[40], max_attempts=2)
    wait_until(lambda: status_of(tq, job_id) == "failed", 20)
    job = tq.get_job(job_id)
    assert job.attempts == 2
    started = runs(db, tq.schema, "started")
    assert [r[1] for r in started] == [1, 2]
    first_pid = int(started[0][3])
    second_pid = int(started[1][3])
    assert first_pid != second_pid
    assert worker.stop() == 0


def test_cooperative_task_stops_at_its_timeout_within_the_grace(
        tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "1", *FAST, *PROCESS)
    job_id = tq.enqueue("timeout_cooperative", max_attempts=1)
    wait_until(lambda: status_of(tq, job_id) == "failed", 15)
    assert "TimeoutError" in tq.get_job(job_id).last_error
    assert [(r[2], r[3]) for r in runs(db, tq.schema)][1:] == [
        ("saw cancel", None), ("on_failure", "TimeoutError")]
    assert worker.stop() == 0


@pytest.mark.parametrize(("task", "expected"), [
    ("exit3", "exited with status 3"),
    ("segfault", "killed by signal 11 (SIGSEGV)"),
    ("kill_self", "killed by signal 9 (SIGKILL)"),
])
def test_crashing_child_fails_one_attempt_and_the_next_job_runs(
        tq, db, runs_table, worker_process, task, expected):
    worker = worker_process(APP, "-c", "1", *FAST, *PROCESS)
    job_id = tq.enqueue(task, max_attempts=1)
    wait_until(lambda: status_of(tq, job_id) == "failed", 15)
    job = tq.get_job(job_id)
    assert job.attempts == 1
    assert job.last_error.startswith("ProcessDied:"), job.last_error
    assert expected in job.last_error
    next_id = tq.enqueue("whoami", args=["next"])
    wait_until(lambda: status_of(tq, next_id) == "succeeded", 10)
    assert worker.process.poll() is None
    assert tq.get_job(next_id).result["attempt"] == 1
    # the failure hook ran in the worker (the child was gone), current_job() answering
    assert [(r[0], r[3]) for r in runs(db, tq.schema, "on_failure")] == \
        [(job_id, "ProcessDied")]
    assert worker.stop() == 0


def test_crash_is_retried_per_policy(tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "2", *FAST, *PROCESS)
    job_id = tq.enqueue("exit3", max_attempts=2)
    wait_until(lambda: status_of(tq, job_id) == "failed", 15)
    assert tq.get_job(job_id).attempts == 2
    assert [r[1] for r in runs(db, tq.schema, "started")] == [1, 2]
    assert worker.stop() == 0


def test_children_live_across_jobs_and_are_recycled_after_n_jobs(
        tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "1", *FAST, *PROCESS, "--max-jobs-per-child", "3")
    ids = [tq.enqueue("whoami", args=[n]) for n in range(7)]
    wait_until(lambda: all(status_of(tq, i) == "succeeded" for i in ids), 20)
    pids = [tq.get_job(i).result["pid"] for i in ids]
    # one slot, jobs in order: three per child, then a new child
    assert pids[0] == pids[1] == pids[2]
    assert pids[3] == pids[4] == pids[5]
    assert len({pids[0], pids[3], pids[6]}) == 3
    assert worker.pid not in pids
    assert worker.stop() == 0


def test_leaky_child_is_recycled_on_memory(tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "1", *FAST, *PROCESS,
                            "--max-memory-per-child", "150")
    ids = [tq.enqueue("leak", args=[20]) for _ in range(12)]
    wait_until(lambda: all(status_of(tq, i) == "succeeded" for i in ids), 30)
    pids = [int(r[3]) for r in runs(db, tq.schema, "ran")]
    assert len(set(pids)) >= 2, pids  # 12 x 20 MiB does not fit in 150 MiB
    assert "max_memory_per_child" in worker.output()
    assert worker.stop() == 0


def test_results_retries_current_job_and_failures_as_with_threads(
        tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "2", *FAST, *PROCESS)
    ok = tq.enqueue("whoami", args=["x"])
    retried = tq.enqueue("retry_then_succeed", args=[2], max_attempts=5)
    failing = tq.enqueue("fail", args=["nope"], max_attempts=3)
    wait_until(lambda: status_of(tq, ok) == "succeeded"
               and status_of(tq, retried) == "succeeded"
               and status_of(tq, failing) == "failed", 20)
    result = tq.get_job(ok).result
    assert result["id"] == ok and result["attempt"] == 1
    assert result["middleware"] is True
    assert result["pid"] != worker.pid
    assert tq.get_job(retried).result == 3
    failed = tq.get_job(failing)
    assert failed.attempts == 3
    assert "RuntimeError: nope" in failed.last_error
    assert "Traceback" in failed.last_error
    assert [(r[0], r[3]) for r in runs(db, tq.schema, "on_failure")] == \
        [(failing, "RuntimeError")]
    assert worker.stop() == 0


def test_cooperative_cancel_reaches_the_child(tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "1", *FAST, *PROCESS)
    job_id = tq.enqueue("polite", args=[40])
    wait_until(lambda: runs(db, tq.schema, "started"), 10)
    assert tq.cancel(job_id)
    wait_until(lambda: status_of(tq, job_id) == "cancelled", 5)
    assert [r[2] for r in runs(db, tq.schema)] == ["started", "cancelled"]
    assert worker.stop() == 0


def test_force_cancel_stops_a_task_that_ignores_it(tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "1", *FAST, *PROCESS)
    job_id = tq.enqueue("stubborn", args=[40])
    wait_until(lambda: runs(db, tq.schema, "started"), 10)
    pid = int(runs(db, tq.schema, "started")[0][3])
    started = time.monotonic()
    assert tq.cancel(job_id)
    wait_until(lambda: status_of(tq, job_id) == "cancelled", 10)
    assert time.monotonic() - started < 5
    assert "did not stop within 1s" in tq.get_job(job_id).last_error
    assert not os.path.exists(f"/proc/{pid}")
    next_id = tq.enqueue("whoami")
    wait_until(lambda: status_of(tq, next_id) == "succeeded", 10)
    assert worker.stop() == 0


def test_sigterm_lets_a_running_child_finish(tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "1", *FAST, *PROCESS)
    job_id = tq.enqueue("sleep", args=[2.0])
    wait_until(lambda: runs(db, tq.schema, "started"), 10)
    children = children_of(worker.pid)
    assert children
    # the heartbeat reports the busy slot, as with threads (pgtaskq stats, dashboard)
    wait_until(lambda: db.execute(f'SELECT busy_slots FROM "{tq.schema}".workers')
               .fetchone()[0] == 1, 5, what="busy_slots = 1")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert status_of(tq, job_id) == "succeeded"
    assert [r[2] for r in runs(db, tq.schema)] == ["started", "finished"]
    assert not any(os.path.exists(f"/proc/{pid}") for pid in children)


def test_sigterm_past_the_grace_stops_the_child_and_hands_the_job_back(
        tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "1", *FAST, *PROCESS, "--grace", "0.5")
    job_id = tq.enqueue("sleep", args=[30])
    wait_until(lambda: runs(db, tq.schema, "started"), 10)
    pid = int(runs(db, tq.schema, "started")[0][4])
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    job = tq.get_job(job_id)
    assert job.status == "queued"
    assert job.attempts == 0  # handed back, not charged
    assert not os.path.exists(f"/proc/{pid}")
    assert runs(db, tq.schema, "finished") == []


def test_sigkill_of_the_worker_takes_its_children(tq, db, runs_table, worker_process):
    worker = worker_process(APP, "-c", "2", *FAST, *PROCESS)
    tq.enqueue("sleep", args=[30])
    wait_until(lambda: runs(db, tq.schema, "started"), 10)
    children = children_of(worker.pid)
    assert len(children) == 2
    worker.kill()
    wait_until(lambda: not any(os.path.exists(f"/proc/{p}") for p in children), 5,
               what="children gone")


def test_worker_options_are_checked(tq):
    with pytest.raises(ConfigurationError, match="pool"):
        Worker(tq, pool="fibers")
    with pytest.raises(ConfigurationError, match="pool='process'"):
        Worker(tq, max_jobs_per_child=3)
    with pytest.raises(ConfigurationError, match="max_jobs_per_child"):
        Worker(tq, pool="process", max_jobs_per_child=0)
