"""Workers that stop by themselves, gracefully and with exit status 0: ``--burst``,
``--max-jobs``, ``--max-memory``; and ``--reload``, which restarts on a code change.
Real worker processes (tasks in tests/apps/exit_app.py)."""

from __future__ import annotations

import os
import textwrap
import time

from worker_helpers import FAST

from pgtaskq.testing import wait_until

APP = "apps.exit_app:tq"


def statuses(tq, ids):
    return [tq.get_job(i).status for i in ids]


def test_burst_runs_what_is_due_then_exits_0(tq, worker_process):
    due = tq.enqueue_many("noop", [{"args": [n]} for n in range(20)])
    later = tq.enqueue("noop", args=["tomorrow"], delay=86_400)
    worker = worker_process(APP, "-c", "4", "--burst", *FAST)
    assert worker.wait(30) == 0, worker.output()
    assert statuses(tq, due) == ["succeeded"] * 20
    assert tq.get_job(later).status == "queued"
    assert "stopping by itself (burst: no job due, 20 run)" in worker.output()


def test_burst_with_nothing_to_do_exits_at_once(tq, worker_process):
    worker = worker_process(APP, "--burst", *FAST)
    begun = time.monotonic()
    assert worker.wait(30) == 0, worker.output()
    assert time.monotonic() - begun < 15


def test_max_jobs_runs_exactly_that_many_then_exits_0(tq, worker_process):
    ids = tq.enqueue_many("noop", [{"args": [n]} for n in range(10)])
    worker = worker_process(APP, "-c", "2", "--max-jobs", "3", *FAST)
    assert worker.wait(30) == 0, worker.output()
    done = statuses(tq, ids)
    assert done.count("succeeded") == 3 and done.count("queued") == 7, done
    assert "--max-jobs: 3 jobs run" in worker.output()


def test_max_memory_exits_0_after_a_leaky_job(tq, worker_process):
    worker = worker_process(APP, "-c", "1", "--max-memory", "300", *FAST)
    worker.wait_ready()
    small = tq.enqueue("hog", args=[10])
    wait_until(lambda: tq.get_job(small).status == "succeeded", 15, what="small job")
    time.sleep(1.5)  # over a memory check interval: still running below the limit
    assert worker.process.poll() is None, worker.output()
    big = tq.enqueue("hog", args=[400])
    assert worker.wait(30) == 0, worker.output()
    assert tq.get_job(big).status == "succeeded"
    assert "--max-memory:" in worker.output() and "over 300 MiB" in worker.output()


def test_reload_restarts_the_worker_when_its_code_changes(tq, worker_process, tmp_path):
    module = tmp_path / "reloadable_app.py"
    source = textwrap.dedent("""
        from pgtaskq import TaskQueue
        tq = TaskQueue()

        @tq.task(name="version")
        def version():
            return {!r}
    """)
    module.write_text(source.format("one"))
    worker = worker_process("reloadable_app:tq", "--reload", *FAST, cwd=str(tmp_path))
    worker.wait_ready()
    first = tq.enqueue("version")
    wait_until(lambda: tq.get_job(first).status == "succeeded", 15, what="first job")
    assert tq.get_job(first).result == "one"

    module.write_text(source.format("two"))
    later = time.time() + 5  # an mtime the watcher cannot miss, whatever the clock's grain
    os.utime(module, (later, later))
    wait_until(lambda: worker.output().count(" ready: ") == 2, 30, what="restarted worker")
    assert "reloadable_app.py changed: restarting the worker" in worker.output()
    second = tq.enqueue("version")
    wait_until(lambda: tq.get_job(second).status == "succeeded", 15, what="second job")
    assert tq.get_job(second).result == "two"
    assert worker.stop() == 0
