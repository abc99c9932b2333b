"""Jobs no claim can take now are parked out of the ready indexes (issue 12, item 4).

A claim walks ``jobs_ready`` in claim order; jobs of a task no live worker registers, or
not due yet, at a higher priority than the runnable ones, were walked by every claim.
They are now parked by the workers' sweep (still ``queued`` for every reader), and taken
back by a worker that runs their task, as soon as it starts or when they come due.
"""

from __future__ import annotations

import json

from click.testing import CliRunner
from test_claim import _find_node
from worker_helpers import FAST

from benchmarks.claim_plan import explain_claim
from pgtaskq import defaults
from pgtaskq.cli import cli
from pgtaskq.sql import registry as registry_sql
from pgtaskq.sql import render
from pgtaskq.testing import WorkerProcess, wait_until

APP = "apps.poison_app:tq"  # registers "plain", not "typo"
OTHER_APP = "apps.basic:tq"  # registers neither


def insert_many(db, tq, task: str, count: int, *, priority: int, delay: str = "0") -> None:
    db.execute(
        f'INSERT INTO "{tq.schema}".jobs (queue, task, max_attempts, priority, run_at) '
        f"SELECT 'default', %s, 1, %s, now() + make_interval(secs => %s) "
        f"FROM generate_series(1, %s)", (task, priority, float(delay), count))


def parked(db, tq, task: str) -> int:
    return db.execute(f'SELECT count(*) FROM "{tq.schema}".jobs WHERE parked AND task = %s',
                      (task,)).fetchone()[0]


def claim_blocks(db, tq, tasks, analyze: bool = True) -> int:
    """Shared buffers the claim's index scan reads (the walk the test is about)."""
    if analyze:
        db.execute(f'ANALYZE "{tq.schema}".jobs')
    plan = explain_claim(db, tq.schema, tasks=tasks, limit=5)
    scan = _find_node(plan, "Index Scan")
    return scan["Shared Hit Blocks"] + scan["Shared Read Blocks"]


def sweep(db, tq) -> int:
    """One worker sweep, run to the end, as the parker thread does it."""
    total = 0
    while True:
        rows = db.execute(render(tq.schema, registry_sql.SWEEP), {
            "window": 1000, "lost_beats": defaults.WORKER_LOST_AFTER_BEATS,
            "lost_min": defaults.WORKER_LOST_AFTER_MIN}).fetchall()
        if not rows:
            return total
        total += sum(row[2] for row in rows)


def test_unknown_task_jobs_are_parked_and_no_longer_walked_by_the_claim(
        private_tq, private_db, private_dsn, worker_pythonpath):
    """20,000 jobs of a task no worker registers, at a higher priority than the runnable
    ones: every claim walked them all. A running worker parks them, they stay queued and
    visible, and the claim's index scan reads a handful of pages again. In a database of
    its own: the VACUUM must not be held back by other sessions' snapshots."""
    tq, db = private_tq, private_db
    insert_many(db, tq, "typo", 20_000, priority=5)
    plain = tq.enqueue_many("plain", [{"args": [n]} for n in range(5)])
    before = claim_blocks(db, tq, ["plain"])
    worker = WorkerProcess(APP, private_dsn, tq.schema, ["--concurrency", "2", *FAST],
                           pythonpath=worker_pythonpath)
    try:
        worker.wait_ready()
        wait_until(lambda: all(tq.get_job(i).status == "succeeded" for i in plain), 60,
                   what="the runnable jobs to run")
        wait_until(lambda: parked(db, tq, "typo") == 20_000, 60, what="the typo'd jobs parked")
        tq.enqueue_many("plain", [{"args": [n]} for n in range(5)])
        worker.stop()
        output = worker.output()
    finally:
        worker.close()
    assert before > 200, before
    # The parked rows' old index entries go with the VACUUM the parker asks for; the
    # worker's own last snapshots may keep them a moment (and autovacuum is off on the
    # shared test server), so vacuum again until they are gone, as autovacuum would.
    def cheap_claim() -> bool:
        db.execute(f'VACUUM (ANALYZE) "{tq.schema}".jobs')
        return claim_blocks(db, tq, ["plain"], analyze=False) < 50

    wait_until(cheap_claim, 60, interval=0.5, what="a cheap claim")
    queued = tq.list_jobs(status="queued", task="typo", limit=3)
    assert [j.status for j in queued] == ["queued"] * 3
    assert "parked 20000 jobs of task 'typo'" in output


def test_a_parked_job_runs_as_soon_as_a_worker_that_knows_its_task_starts(
        tq, db, worker_process):
    job_id = tq.enqueue("plain", args=["late"])
    other = worker_process(OTHER_APP, "--concurrency", "1", *FAST)
    other.wait_ready()
    wait_until(lambda: parked(db, tq, "plain") == 1, 30, what="the job parked")
    assert tq.get_job(job_id).status == "queued"
    knows = worker_process(APP, "--concurrency", "1", *FAST)
    knows.wait_ready()
    job = wait_until(lambda: (j := tq.get_job(job_id)) and j.status == "succeeded" and j, 15,
                     what="the job run by the worker that knows its task")
    assert job.result == "late"


def test_a_parked_future_job_runs_when_due(tq, db, worker_process):
    """A deferred job parked by the sweep is taken back by its worker at its run_at."""
    worker = worker_process(APP, "--concurrency", "1", *FAST)
    worker.wait_ready()
    later = tq.enqueue("plain", args=["later"], priority=5, delay=2.0)
    now_ids = tq.enqueue_many("plain", [{"args": [n]} for n in range(3)])
    wait_until(lambda: parked(db, tq, "plain") == 1, 30, what="the future job parked")
    assert all(tq.get_job(i).status == "succeeded" for i in now_ids)
    job = wait_until(lambda: (j := tq.get_job(later)) and j.status == "succeeded" and j, 30,
                     what="the parked job run when due")
    assert (job.finished_at - job.run_at).total_seconds() < 5  # its worker's poll: 0.5 s


def test_check_names_unknown_tasks_without_failing_and_stats_marks_them(
        tq, db, worker_process):
    """One typo'd job made ``pgtaskq check`` fail its backlog check for ever while a
    healthy worker ran, and ``stats`` gave no hint why."""
    insert_many(db, tq, "typo", 1, priority=0, delay="-600")  # waiting 10 minutes
    worker = worker_process(APP, "--concurrency", "1", *FAST)
    worker.wait_ready()
    wait_until(lambda: parked(db, tq, "typo") == 1, 30, what="the typo'd job parked")
    runner = CliRunner()
    base = ["--dsn", tq.conninfo, "--schema", tq.schema]
    result = runner.invoke(cli, [*base, "check", "--max-age", "60"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "'typo'" in line]
    assert len(lines) == 1 and "no live worker registers it" in lines[0], result.output
    stats = runner.invoke(cli, [*base, "stats"])
    assert stats.exit_code == 0, stats.output
    assert "typo (NO WORKER)" in stats.output
    data = json.loads(runner.invoke(cli, [*base, "stats", "--json"]).output)
    assert data["tasks_without_worker"] == {"typo": 1}


def test_workers_publish_their_tasks_with_what_each_declares(tq, db, worker_process):
    worker = worker_process(APP, "--concurrency", "1", *FAST)
    worker.wait_ready()
    rows = db.execute(
        f'SELECT task, queue, priority, max_attempts, timeout FROM "{tq.schema}".worker_tasks '
        "WHERE task IN ('plain', 'surrogate_result') ORDER BY task").fetchall()
    assert rows == [("plain", "default", 0, defaults.MAX_ATTEMPTS, None),
                    ("surrogate_result", "default", 0, 3, None)]


def _tuples_processed(node: dict) -> int:
    """Rows every node of a plan produced or threw away, over all its loops."""
    own = node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
    own += node.get("Rows Removed by Filter", 0) + node.get("Rows Removed by Join Filter", 0)
    return own + sum(_tuples_processed(child) for child in node.get("Plans", []))


def test_a_sweep_reads_its_window_whatever_the_ready_backlog_and_the_statistics(db, tq):
    """The sweep looks at the first ``window`` ready jobs only. Seen in the benchmark: with
    the statistics taken while most rows were parked (so the planner expects one ready
    row), the sweep joined every ready job against the window, 20,000 x 1,000 rows: 4-12 s
    of CPU per sweep behind 20,000 ready jobs, growing with the backlog."""
    ready, window = 5000, 100
    insert_many(db, tq, "typo", ready, priority=0)
    db.execute(f'UPDATE "{tq.schema}".jobs SET parked = true')
    db.execute(f'ANALYZE "{tq.schema}".jobs')  # statistics: every row parked
    db.execute(f'UPDATE "{tq.schema}".jobs SET parked = false')
    statement = render(tq.schema, registry_sql.SWEEP)
    with db.transaction(force_rollback=True):
        plan = db.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, {
            "window": window, "lost_beats": defaults.WORKER_LOST_AFTER_BEATS,
            "lost_min": defaults.WORKER_LOST_AFTER_MIN}).fetchone()[0][0]["Plan"]
    processed = _tuples_processed(plan)
    assert processed < 20 * window, (
        f"the sweep processed {processed:,} rows for a window of {window} "
        f"({ready:,} ready jobs)")
