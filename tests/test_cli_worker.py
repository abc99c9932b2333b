"""The inspection commands on jobs a real worker finished: results, errors, retry.

Only a worker makes jobs ``succeeded`` or ``failed``; this runs one (``tests/apps/basic.py``)
and then looks at its work the way an operator would, through the command line.
"""

from __future__ import annotations

import json

import psycopg
from click.testing import CliRunner, Result
from worker_helpers import FAST, create_runs_table

from pgtaskq import TaskQueue
from pgtaskq.cli import cli
from pgtaskq.testing import wait_until


def test_operator_session_on_finished_jobs(
    pgtaskq_dsn: str, tq: TaskQueue, db: psycopg.Connection, worker_process
) -> None:
    create_runs_table(db, tq.schema)

    def run(*args: str) -> Result:
        result = CliRunner().invoke(cli, ["--dsn", pgtaskq_dsn, "--schema", tq.schema, *args])
        assert result.exit_code == 0, (result.output, result.exception)
        return result

    ok_id = int(run("enqueue", "noop", "--args", "[42]").stdout)
    bad_id = int(run("enqueue", "fail", "--kwargs", '{"message": "kaput"}',
                     "--max-attempts", "1").stdout)
    worker = worker_process("apps.basic:tq", "-c", "2", *FAST)
    worker.wait_ready()

    def finished() -> bool:
        jobs = {j["id"]: j["status"] for j in json.loads(run("jobs", "--json").stdout)}
        return jobs == {ok_id: "succeeded", bad_id: "failed"}

    wait_until(finished, 20, what="both jobs finished")

    assert [ok_id] == [int(line.split()[0]) for line in
                       run("jobs", "--status", "succeeded").stdout.splitlines()[2:]]
    shown = json.loads(run("show", str(ok_id), "--json").stdout)
    assert (shown["result"], shown["attempts"]) == (42, 1)
    assert shown["finished_at"] is not None

    failed_table = run("show", str(bad_id)).stdout
    assert failed_table.rstrip().endswith("RuntimeError: kaput")
    assert "RuntimeError: kaput" in run("jobs", "--status", "failed").stdout  # last line shown

    first_failure = tq.get_job(bad_id).finished_at  # type: ignore[union-attr]
    assert f"job {bad_id}: queued again" in run("retry", str(bad_id)).stdout

    def failed_again() -> bool:
        job = tq.get_job(bad_id)
        return job is not None and job.status == "failed" and job.finished_at > first_failure

    wait_until(failed_again, 20, what="retried job failed again")
    assert worker.stop() == 0
