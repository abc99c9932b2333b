"""The worker's hot statements keep cheap plans whatever the table's statistics say.

A queue's statistics are usually stale: the table fills and empties faster than autovacuum
analyzes it. These tests analyze the jobs table while no job is running (the planner then
believes a worker holds at most one running row), lease a few hundred jobs, and look at
what the acknowledgement and the heartbeat really do, with ``EXPLAIN ANALYZE``.
"""

from __future__ import annotations

import json
import re

import psycopg

from pgtaskq.completer import Outcome, complete_params
from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql
from pgtaskq.worker import _claim

FAKE_WORKER = 515151
HELD = 300
"""Jobs the fake worker holds (leased and running)."""


def _rows_removed(plan: dict) -> int:
    """Rows that every node of ``plan`` read and threw away, summed over loops."""
    loops = plan.get("Actual Loops", 1)
    here = (plan.get("Rows Removed by Filter", 0)
            + plan.get("Rows Removed by Join Filter", 0)) * loops
    return here + sum(_rows_removed(p) for p in plan.get("Plans", []))


def _explain(db, statement: str, params: dict) -> dict:
    """EXPLAIN ANALYZE ``statement`` as the worker runs it, in a rolled-back transaction.

    The worker's statements are prepared (psycopg prepares a query run five times), and a
    prepared statement soon runs a generic plan, planned without the parameters' values:
    the planner then guesses 10 elements for an array parameter. A plain EXPLAIN would
    plan with the values known, so here the statement is PREPAREd and its generic plan
    forced.
    """
    names: list[str] = []

    def placeholder(match: re.Match) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    text = re.sub(r"%\((\w+)\)s", placeholder, statement)
    values = psycopg.ClientCursor(db).mogrify(
        ", ".join(["%s"] * len(names)), [params[name] for name in names])
    db.execute("BEGIN")
    try:
        db.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        db.execute(f"PREPARE pgtaskq_explained AS {text}")
        (plan,) = db.execute(
            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE pgtaskq_explained({values})").fetchone()[0]
    finally:
        db.execute("ROLLBACK")
        db.execute("DEALLOCATE ALL")
    return (plan if isinstance(plan, dict) else json.loads(plan))["Plan"]


def _stale_statistics_and_held_jobs(tq, db) -> list[tuple[int, int]]:
    """20,000 queued jobs analyzed before any runs; then ``HELD`` leased by FAKE_WORKER."""
    db.execute(f'INSERT INTO "{tq.schema}".jobs (queue, task, max_attempts) '
               "SELECT 'default', 't', 3 FROM generate_series(1, 20000)")
    db.execute(f'ANALYZE "{tq.schema}".jobs')
    rows = db.execute(render(tq.schema, worker_sql.CLAIM_ANY_QUEUE), {
        "worker_id": FAKE_WORKER, "tasks": ["t"], "limit": HELD, "lease": 60,
        "queues": None}).fetchall()
    assert len(rows) == HELD
    return sorted((row[0], row[6]) for row in rows)


def test_acknowledgement_probes_each_job_by_primary_key(tq, db):
    held = _stale_statistics_and_held_jobs(tq, db)
    batch = [Outcome(job_id, attempt, "succeeded", queue="default", task="t")
             for job_id, attempt in held[::2]]
    plan = _explain(db, render(tq.schema, worker_sql.COMPLETE),
                    complete_params(FAKE_WORKER, batch, 1.0, 60.0))
    # Joined with the worker's running rows instead, 150 outcomes x 300 rows were compared.
    assert _rows_removed(plan) < 10 * len(batch)
    assert plan["Actual Rows"] == len(batch)


def test_acknowledgement_ignores_outcomes_of_jobs_it_does_not_hold(tq, db):
    held = _stale_statistics_and_held_jobs(tq, db)
    (job_id, attempt), other = held[0], held[1]
    stale = [Outcome(job_id, attempt + 1, "succeeded", queue="default", task="t"),
             Outcome(other[0], other[1], "succeeded", queue="default", task="t")]
    rows = db.execute(render(tq.schema, worker_sql.COMPLETE),
                      complete_params(FAKE_WORKER + 1, stale, 1.0, 60.0)).fetchall()
    assert rows == []
    rows = db.execute(render(tq.schema, worker_sql.COMPLETE),
                      complete_params(FAKE_WORKER, stale, 1.0, 60.0)).fetchall()
    assert rows == [("archived", other[0], None)]


def test_heartbeat_probes_each_job_by_primary_key(tq, db):
    held = _stale_statistics_and_held_jobs(tq, db)
    plan = _explain(db, render(tq.schema, worker_sql.HEARTBEAT), {
        "worker_id": FAKE_WORKER, "ids": [i for i, _ in held], "attempts": [a for _, a in held],
        "lease": 60, "busy_slots": 0, "stuck_slots": 0})
    assert _rows_removed(plan) < 10 * HELD
    assert plan["Actual Rows"] == HELD


def test_claim_commits_without_waiting_for_the_disk(db):
    (row,) = _claim(db, "SELECT current_setting('synchronous_commit')", {}, index_order=False)
    assert row == ("off",)
    assert db.execute("SHOW synchronous_commit").fetchone() == ("on",)  # its own tx only
