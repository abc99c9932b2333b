"""The worker's hot statements keep cheap plans whatever the table's statistics say.

A queue's statistics are usually stale: the table fills and empties faster than autovacuum
analyzes it. These tests analyze the jobs table while no job is running (the planner then
believes a worker holds at most one running row), lease a few hundred jobs, and look at
what the acknowledgement and the heartbeat really do, with ``EXPLAIN ANALYZE``.
"""

from __future__ import annotations

import contextlib
import json
import re

import psycopg
import pytest
from worker_helpers import FAST, create_runs_table, runs

from pgtaskq import defaults
from pgtaskq.pool import LivenessCheck, open_pool
from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql
from pgtaskq.testing import wait_until
from pgtaskq.worker.completer import Completer, complete_params
from pgtaskq.worker.held import HeldJobs
from pgtaskq.worker.outcome import Outcome

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
    rows = db.execute(render(tq.schema, worker_sql.CLAIM), {
        "worker_id": FAKE_WORKER, "tasks": ["t"], "limit": HELD, "lease": 60,
        "claimers": defaults.CLAIMERS, "queues": None}).fetchall()
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


def test_claim_commits_without_waiting_for_the_disk(tq, db):
    claim = render(tq.schema, worker_sql.CLAIM)
    params = {"worker_id": FAKE_WORKER, "tasks": ["t"], "limit": 1, "lease": 60, "queues": None,
              "claimers": defaults.CLAIMERS}
    with db.transaction(force_rollback=True):
        db.execute(claim, params).fetchall()
        assert db.execute("SHOW synchronous_commit").fetchone() == ("off",)
        assert db.execute("SHOW enable_sort").fetchone() == ("off",)
    # the settings are the claim's transaction's: an autocommit call leaves none behind
    db.execute(claim, params).fetchall()
    assert db.execute("SHOW synchronous_commit").fetchone() == ("on",)
    assert db.execute("SHOW enable_sort").fetchone() == ("on",)


def _claim_waits(dsn: str, schema: str, holders: list[list[str] | None],
                 claimer: list[str] | None, claimers: int) -> bool:
    """Whether a claim for ``claimer`` waits while claims for ``holders`` are uncommitted."""
    claim = render(schema, worker_sql.CLAIM)

    def params(worker_id: int, queues: list[str] | None) -> dict:
        return {"worker_id": worker_id, "tasks": ["t"], "limit": 1, "lease": 60,
                "queues": queues, "claimers": claimers}

    with contextlib.ExitStack() as stack:
        for n, queues in enumerate(holders, start=1):
            holder = stack.enter_context(psycopg.connect(dsn, autocommit=True))
            stack.enter_context(holder.transaction(force_rollback=True))
            holder.execute(claim, params(n, queues)).fetchall()
        other = stack.enter_context(psycopg.connect(dsn, autocommit=True))
        other.execute("SET lock_timeout = '300ms'")
        try:
            other.execute(claim, params(99, claimer)).fetchall()
        except psycopg.errors.LockNotAvailable:
            return True
        return False


def test_claims_of_one_queue_set_take_turns(tq, pgtaskq_dsn):
    tq.enqueue_many("t", [{} for _ in range(8)])
    dsn, schema = pgtaskq_dsn, tq.schema
    assert _claim_waits(dsn, schema, [None], None, claimers=1)
    assert not _claim_waits(dsn, schema, [None], None, claimers=2)
    assert _claim_waits(dsn, schema, [None, None], None, claimers=2)
    assert not _claim_waits(dsn, schema, [None, None, None], None, claimers=0)  # no limit
    assert _claim_waits(dsn, schema, [["a", "b"]], ["b", "a", "b"], claimers=1)  # same set
    # workers of other queue sets never wait for each other
    assert not _claim_waits(dsn, schema, [None], ["default"], claimers=1)
    assert not _claim_waits(dsn, schema, [["a"]], ["a", "b"], claimers=1)


def test_acknowledgement_never_waits_for_a_row_lock(tq, db, pgtaskq_dsn):
    """A row held by this worker but locked by another transaction (another worker's claim
    can keep such a lock until it commits) comes back 'busy' instead of blocking."""
    held = _stale_statistics_and_held_jobs(tq, db)
    (locked_id, locked_attempt), (free_id, free_attempt) = held[0], held[1]
    batch = [Outcome(locked_id, locked_attempt, "succeeded", queue="default", task="t"),
             Outcome(free_id, free_attempt, "succeeded", queue="default", task="t")]
    statement = render(tq.schema, worker_sql.COMPLETE)
    with psycopg.connect(pgtaskq_dsn) as other:
        other.execute(f'SELECT 1 FROM "{tq.schema}".jobs WHERE id = %s FOR UPDATE',
                      (locked_id,))
        db.execute("SET statement_timeout = '5s'")  # a wait would fail the test, not hang it
        rows = db.execute(statement, complete_params(FAKE_WORKER, batch, 1.0, 60.0)).fetchall()
        assert sorted(rows) == [("archived", free_id, None), ("busy", locked_id, None)]
    rows = db.execute(statement, complete_params(FAKE_WORKER, batch, 1.0, 60.0)).fetchall()
    assert rows == [("archived", locked_id, None)]


def test_completer_writes_a_busy_outcome_once_the_lock_is_gone(tq, db, pgtaskq_dsn):
    held = _stale_statistics_and_held_jobs(tq, db)
    job_id, attempt = held[0]
    holder = psycopg.connect(pgtaskq_dsn)
    holder.execute(f'SELECT 1 FROM "{tq.schema}".jobs WHERE id = %s FOR UPDATE', (job_id,))
    pool = open_pool(tq.conninfo, min_size=1, max_size=2, name="busy", liveness=LivenessCheck())
    completer = Completer(pool, tq.schema, FAKE_WORKER, HeldJobs(), flush_interval=0.01)
    completer.start()
    try:
        completer.add(Outcome(job_id, attempt, "succeeded", queue="default", task="t"))
        wait_until(lambda: completer.busy_retries >= 3, 5,
                   what="the outcome tried again while the row is locked")
        assert completer.written == 0 and _status(db, tq, job_id) == "running"
        holder.rollback()
        wait_until(lambda: completer.written == 1, 10, what="the outcome written")
        assert _status(db, tq, job_id) is None
        assert db.execute(f'SELECT status FROM "{tq.schema}".job_history WHERE id = %s',
                          (job_id,)).fetchone() == ("succeeded",)
    finally:
        holder.close()
        completer.flush_and_stop(5)
        pool.close()


def _status(db, tq, job_id):
    row = db.execute(f'SELECT status FROM "{tq.schema}".jobs WHERE id = %s', (job_id,)).fetchone()
    return row[0] if row else None


def test_claimers_are_validated_and_reach_the_claim(tq, db, worker_process):
    from click.testing import CliRunner

    from pgtaskq import ConfigurationError, TaskQueue, Worker
    from pgtaskq.cli import cli

    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigurationError, match="claimers"):
            Worker(TaskQueue("postgresql://nowhere/x"), claimers=bad)
    result = CliRunner().invoke(cli, ["--dsn", "postgresql://nowhere/x", "worker", "m:tq",
                                      "--claimers", "-1"])
    assert result.exit_code == 2 and "--claimers" in result.output

    create_runs_table(db, tq.schema)
    worker = worker_process("apps.basic:tq", "--claimers", "1", *FAST)
    worker.wait_ready()
    # a claim of another worker holds the only turn: this worker leases nothing until it ends
    with psycopg.connect(tq.conninfo, autocommit=True) as other, \
            other.transaction(force_rollback=True):
        other.execute(render(tq.schema, worker_sql.CLAIM), {
            "worker_id": FAKE_WORKER, "tasks": ["nothing"], "limit": 1, "lease": 60,
            "queues": None, "claimers": 1}).fetchall()
        job = tq.enqueue("record", args=["held back"])
        wait_until(lambda: db.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
        ).fetchone()[0] >= 1, 10, what="the worker's claim waiting for its turn")
        assert tq.get_job(job).status == "queued"
    wait_until(lambda: tq.get_job(job).status == "succeeded", 10, what="job run after the turn")
    assert [run[3] for run in runs(db, tq.schema, "ran")] == ["held back"]
    assert worker.stop() == 0
