"""One bad job, outcome or child process hurts only itself (issue 12).

Each test pins down a way one job used to take others, or a whole worker, down with it:
arguments Python's json cannot decode, outcomes PostgreSQL cannot store, a heartbeat
alarming about jobs whose outcome was written, and tasks that fork.
"""

from __future__ import annotations

import json
import os
import random
import signal
import string
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from worker_helpers import FAKE_WORKER, FAST, claim

from pgtaskq.cli import cli
from pgtaskq.context import JobContext
from pgtaskq.pool import LivenessCheck, open_pool
from pgtaskq.testing import wait_until
from pgtaskq.worker.completer import Completer
from pgtaskq.worker.held import HeldJob, HeldJobs
from pgtaskq.worker.outcome import Outcome

APP = "apps.poison_app:tq"

HUGE_INT_ARGS = "'[' || repeat('9', 5000) || ']'"  # jsonb takes it, Python's json does not
DEEP_ARGS = "repeat('[', 3000) || repeat(']', 3000)"


def insert_raw(db, tq, args_sql: str, *, task="plain", max_attempts=3, delay="0") -> int:
    """A job written by SQL, as a producer in another language (or an old pgtaskq) could."""
    return db.execute(
        f'INSERT INTO "{tq.schema}".jobs (queue, task, args, max_attempts, run_at) '
        f"VALUES ('default', %s, ({args_sql})::jsonb, %s, "
        f"now() + make_interval(secs => %s)) RETURNING id",
        (task, max_attempts, float(delay))).fetchone()[0]


def finished(tq, *ids):
    jobs = [tq.get_job(i) for i in ids]
    return all(j is not None and j.finished_at is not None for j in jobs) and jobs


def invoke(tq, *args):
    return CliRunner().invoke(cli, ["--dsn", tq.conninfo, "--schema", tq.schema, *args],
                              catch_exceptions=True)


# -- 1. a job the worker cannot decode fails alone -----------------------------------------


def test_undecodable_job_fails_alone_and_the_rest_of_its_batch_runs(tq, db, worker_process):
    """A 5,000-digit number or 3,000-deep nesting made the claim raise after its leases
    were committed: every job of the batch was abandoned (innocent max_attempts=1 jobs
    ended failed with "lease expired" without running) and the worker retried for ever."""
    good = [tq.enqueue("plain", args=[1], max_attempts=1)]
    huge = insert_raw(db, tq, HUGE_INT_ARGS)
    deep = insert_raw(db, tq, DEEP_ARGS)
    good.append(tq.enqueue("plain", args=[2], max_attempts=1))
    worker = worker_process(APP, "--concurrency", "4", *FAST)
    worker.wait_ready()
    jobs = wait_until(lambda: finished(tq, *good, huge, deep), 15, what="all four finished")
    by_id = {job.id: job for job in jobs}
    for job_id in good:
        assert (by_id[job_id].status, by_id[job_id].attempts) == ("succeeded", 1)
    for job_id in (huge, deep):
        job = by_id[job_id]
        assert (job.status, job.attempts) == ("failed", 1), job  # at once, no retry
        assert "UndecodableJob" in job.last_error
        assert job.undecodable == ("args",)
    assert "nested deeper" in by_id[deep].last_error
    assert "leasing jobs failed" not in worker.output()


def test_admin_commands_show_and_cancel_an_undecodable_job(tq, db):
    """``pgtaskq jobs``, ``show`` and ``cancel`` crashed with a traceback on such a row."""
    job_id = insert_raw(db, tq, HUGE_INT_ARGS, delay="3600")
    job = tq.get_job(job_id)
    assert job.undecodable == ("args",)
    assert job.args.startswith("[9999")  # the raw JSON text
    assert [j.id for j in tq.list_jobs()] == [job_id]
    listed = invoke(tq, "jobs")
    assert listed.exit_code == 0, listed.output
    assert str(job_id) in listed.output
    shown = invoke(tq, "show", str(job_id))
    assert shown.exit_code == 0, shown.output
    assert "undecodable" in shown.output
    as_json = json.loads(invoke(tq, "show", "--json", str(job_id)).output)
    assert as_json["undecodable"] == ["args"]
    cancelled = invoke(tq, "cancel", str(job_id))
    assert cancelled.exit_code == 0, cancelled.output
    assert tq.get_job(job_id).status == "cancelled"


# -- 2. every outcome can be written -------------------------------------------------------


def test_outcomes_with_lone_surrogates_are_written_and_do_not_wedge_the_completer(
        tq, db, worker_process):
    """``ValueError(f"cannot open {name}")`` with a name from os.listdir() (a lone
    surrogate) made COMPLETE fail with an encoding error for ever: the completer retried
    the batch endlessly and its jobs stayed 'running'. A successful result holding one
    was recorded failed and run again."""
    worker = worker_process(APP, "--concurrency", "4", *FAST)
    worker.wait_ready()
    error_id = tq.enqueue("surrogate_error")
    result_id = tq.enqueue("surrogate_result")
    huge_id = tq.enqueue("huge_error")
    others = [tq.enqueue("plain", args=[n]) for n in range(20)]
    jobs = wait_until(lambda: finished(tq, error_id, result_id, huge_id, *others), 60,
                      what="every outcome written")
    by_id = {job.id: job for job in jobs}
    error_job = by_id[error_id]
    assert error_job.status == "failed"
    assert "cannot open caf\\udce9.txt" in error_job.last_error  # escaped, still readable
    result_job = by_id[result_id]
    assert (result_job.status, result_job.attempts) == ("succeeded", 1)  # not run again
    assert "caf\\udce9.txt" in result_job.result
    assert by_id[huge_id].status == "failed"
    assert len(by_id[huge_id].last_error) < 100_000
    assert "ValueError" in by_id[huge_id].last_error
    assert all(by_id[i].status == "succeeded" for i in others)
    assert "could not write" not in worker.output()


@pytest.fixture
def pool(tq):
    pool = open_pool(tq.conninfo, min_size=1, max_size=2, name="poison",
                     liveness=LivenessCheck())
    try:
        yield pool
    finally:
        pool.close()


def test_a_batch_that_still_fails_is_split_down_to_the_one_bad_row(tq, db, pool):
    """An outcome PostgreSQL refuses for a reason other than DataError (here a task name
    too long for the history's index: ``index row size exceeds maximum``) wedged the
    completer: it split a batch only on DataError. Now the batch is split down to that
    row, which ends failed, and every other outcome is written within a second."""
    long_task = "".join(random.Random(12).choices(string.ascii_letters, k=8000))  # no TOAST
    ids = [tq.enqueue("some.task", max_attempts=1) for _ in range(9)]
    bad = insert_raw(db, tq, "'[]'", task=long_task, max_attempts=1)
    rows = claim(db, tq, ["some.task", long_task], limit=20)
    assert len(rows) == 10
    held = HeldJobs()
    completer = Completer(pool, tq.schema, FAKE_WORKER, held)
    completer.start()
    started = time.monotonic()
    try:
        for job_id, task, queue, *_rest in rows:
            attempt = _rest[3]
            held.add(HeldJob(job_id, task, queue, [], {}, attempt, 1, 0.0,
                             JobContext(job_id, task, queue, attempt, 1)))
            completer.add(Outcome(job_id, attempt, "succeeded", result='"ok"',
                                  queue=queue, task=task, max_attempts=1))
        wait_until(lambda: all(tq.get_job(i).status == "succeeded" for i in ids), 1.0,
                   what="the good outcomes written within a second")
        assert time.monotonic() - started < 1.5
        job = wait_until(lambda: (j := tq.get_job(bad)) and j.finished_at and j, 5)
        assert job.status == "failed"
        assert "could not store" in job.last_error
        assert len(held) == 0
    finally:
        completer.flush_and_stop(5)


# -- 6. the heartbeat agrees with the acknowledgements --------------------------------------


def test_no_lost_lease_warning_for_jobs_whose_outcome_was_written(tq, worker_process):
    """A heartbeat that ran while an acknowledgement committed logged "lost its lease" for
    a job that had just succeeded: it compared its held set with rows the acknowledgement
    had moved to the history. With a heartbeat every 20 ms through thousands of short
    jobs, the race is hit many times."""
    worker = worker_process(APP, "--concurrency", "8", "--heartbeat-interval", "0.02",
                            "--lease", "30")
    worker.wait_ready()
    ids = tq.enqueue_many("plain", [{"args": [n]} for n in range(6000)])
    wait_until(lambda: tq.get_job(ids[-1]).status == "succeeded"
               and all(tq.get_job(i).finished_at for i in ids[::500]), 60,
               what="the jobs to finish")
    assert "lost its lease" not in worker.output()


# -- 5. a task that forks ---------------------------------------------------------------


def _sockets_of(pid: int) -> list[str]:
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return [link for link in links if link.startswith("socket:")]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True


def test_a_forked_child_that_returns_into_the_worker_exits(tq, worker_process, tmp_path):
    """A child forked without exec/_exit fell back into the slot's loop: it waited there
    for ever as a headless copy of the worker, so the parent task waiting for it hung."""
    pid_file = str(tmp_path / "child.pid")
    worker = worker_process(APP, "--concurrency", "2", *FAST)
    worker.wait_ready()
    job_id = tq.enqueue("fork_and_wait", args=[pid_file], max_attempts=1)
    job = wait_until(lambda: (j := tq.get_job(job_id)) and j.finished_at and j, 15,
                     what="the forking job to finish")
    assert (job.status, job.result) == ("succeeded", "from the parent")
    child = int(Path(pid_file).read_text())
    wait_until(lambda: _gone(child), 5, what="the child to exit")
    assert "returned into the worker's code" in worker.output()


def test_a_forked_child_keeps_no_socket_and_dies_on_sigterm(tq, worker_process, tmp_path):
    """The child kept the worker's PostgreSQL sockets and its SIGTERM handler (which only
    sets a flag nobody reads in the child): SIGTERM did not end it."""
    pid_file = str(tmp_path / "child.pid")
    worker = worker_process(APP, "--concurrency", "2", *FAST)
    worker.wait_ready()
    tq.enqueue("fork_and_linger", args=[pid_file, 60])
    child = int(wait_until(lambda: os.path.exists(pid_file) and Path(pid_file).read_text(), 15,
                           what="the child's pid"))
    try:
        assert _sockets_of(child) == []
        assert _sockets_of(worker.pid) != []  # the worker keeps its own
        os.kill(child, signal.SIGTERM)
        wait_until(lambda: _gone(child), 5, what="the child to die of SIGTERM")
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


def test_an_attempt_whose_process_tree_outlives_shutdown_is_charged(
        tq, worker_process, tmp_path):
    """A job whose forked child still ran at the end of the grace period was handed back
    uncharged at every shutdown: a job waiting for a child that never ends never ended.
    Its attempt is now charged, so with max_attempts=1 it ends failed."""
    pid_file = str(tmp_path / "child.pid")
    options = [o for o in FAST]
    options[options.index("--grace") + 1] = "0.5"
    worker = worker_process(APP, "--concurrency", "2", *options)
    worker.wait_ready()
    job_id = tq.enqueue("fork_and_linger", args=[pid_file, 60], max_attempts=1)
    child = int(wait_until(lambda: os.path.exists(pid_file) and Path(pid_file).read_text(), 15,
                           what="the child's pid"))
    try:
        assert worker.stop() == 0
        job = tq.get_job(job_id)
        assert (job.status, job.attempts) == ("failed", 1), job
        assert "forked by the task were still running" in job.last_error
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
