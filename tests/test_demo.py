"""``make demo`` runs ``python -m pgtaskq.demo``: it must work from a clean schema, twice."""

from __future__ import annotations

import os
import subprocess
import sys

from pgtaskq import TaskQueue


def test_demo_runs_twice_with_the_same_jobs(pgtaskq_dsn: str, schema_name: str) -> None:
    env = {**os.environ, "PGTASKQ_DSN": pgtaskq_dsn, "PGTASKQ_DEMO_SCHEMA": schema_name}
    try:
        outputs = []
        for _ in range(2):
            done = subprocess.run([sys.executable, "-m", "pgtaskq.demo"], env=env,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout)
        tq = TaskQueue(pgtaskq_dsn, schema=schema_name)
        jobs = tq.list_jobs()
        tq.close()
    finally:
        TaskQueue(pgtaskq_dsn, schema=schema_name).uninstall()
    # single + 5 bulk + delayed + deduped (asked twice, created once) + flaky; fresh each run
    # (the deduplicated insert used up id 9: ON CONFLICT draws from the identity first)
    assert sorted(job.id for job in jobs) == [*range(1, 9), 10]
    assert {job.task for job in jobs} == {
        "pgtaskq.demo.send_welcome_email", "demo.resize_image", "demo.flaky"}
    # the demo's worker really ran them all, the flaky one on its second attempt
    assert {job.status for job in jobs} == {"succeeded"}
    assert {job.attempts for job in jobs if job.task == "demo.flaky"} == {2}
    for out in outputs:
        assert "then job 8 again" in out
        assert "pgtaskq.demo.send_welcome_email" in out  # the jobs table
        assert "$ pgtaskq stats" in out and "workers:" in out
        assert "worker exited with status 0" in out
        assert "worker pgtaskq.demo:tq" in out
