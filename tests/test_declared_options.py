"""Enqueue by name uses the options the task declares, as its workers publish them."""

from __future__ import annotations

from click.testing import CliRunner

from pgtaskq.cli import cli
from pgtaskq.queue import TaskQueue
from pgtaskq.testing import wait_until


def test_enqueue_by_name_lands_where_the_tasks_workers_look(tq, pgtaskq_dsn, worker_process):
    """``pgtaskq enqueue reports.build`` for a task declared with queue="reports",
    max_attempts=2 landed in "default" with 20 attempts, where a worker serving only
    "reports" never saw it."""
    worker = worker_process("apps.declared_app:tq", "--queue", "reports",
                            "--poll-interval", "0.5")
    worker.wait_ready()
    producer = TaskQueue(pgtaskq_dsn, schema=tq.schema, pool_max_size=2)  # no tasks
    try:
        job_id = producer.enqueue("reports.build", args=[1])
        job = tq.get_job(job_id)
        assert (job.queue, job.priority, job.max_attempts) == ("reports", 5, 2)
        wait_until(lambda: tq.get_job(job_id).status == "succeeded", 15, what="job run")
        assert tq.get_job(job_id).result == {"report": 1, "queue": "reports"}

        [many] = producer.enqueue_many("reports.build", [{"args": [2]}])
        assert tq.get_job(many).queue == "reports"
        explicit = producer.enqueue("reports.build", args=[3], queue="other", max_attempts=7)
        assert (tq.get_job(explicit).queue, tq.get_job(explicit).max_attempts) == ("other", 7)
    finally:
        producer.close()

    result = CliRunner().invoke(cli, ["--dsn", pgtaskq_dsn, "--schema", tq.schema,
                                      "enqueue", "reports.build", "--args", "[4]"])
    assert result.exit_code == 0, result.output
    job = tq.get_job(int(result.output.strip()))
    assert (job.queue, job.priority, job.max_attempts) == ("reports", 5, 2)
    assert worker.stop() == 0


def test_a_task_no_worker_declares_gets_the_queues_defaults(tq):
    job = tq.get_job(tq.enqueue("nobody.runs.this"))
    assert (job.queue, job.priority, job.max_attempts) == ("default", 0, 20)
