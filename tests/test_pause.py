"""Pausing a queue: no worker claims its jobs from the next claim on; resuming wakes them.

The claim reads the paused queues itself (``claim_jobs``, schema version 3), so the
statement tests check what every worker's claim leases, and the process tests check that
real workers started with and without ``--queue`` stop within a second and start again
at once, driven through the command line as an operator would.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
import pytest
from click.testing import CliRunner
from worker_helpers import FAST, create_runs_table

from benchmarks.claim_plan import explain_claim
from pgtaskq import TaskQueue
from pgtaskq.cli import cli
from pgtaskq.operations.stats import collect
from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql
from pgtaskq.testing import wait_until


def assert_stays_false(predicate: Callable[[], object], seconds: float, what: str) -> None:
    """Fail as soon as ``predicate`` holds within ``seconds`` (a negative check needs a
    period to watch; this one polls it rather than sleeping blindly)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert not predicate(), what
        time.sleep(0.02)


def claim(db: psycopg.Connection, tq: TaskQueue, queues: list[str] | None,
          limit: int = 100) -> list[str]:
    rows = db.execute(render(tq.schema, worker_sql.CLAIM), {
        "worker_id": 77, "tasks": ["t"], "limit": limit, "lease": 60, "claimers": 2,
        "queues": queues}).fetchall()
    return sorted(row[2] for row in rows)


def cli_run(dsn: str, tq: TaskQueue, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, ["--dsn", dsn, "--schema", tq.schema, *args])
    assert result.exit_code == code, (result.output, result.exception)
    return result.output


@pytest.mark.parametrize("worker_queues", [None, ["a", "b"], ["b"], ["a", "b", "c"]])
def test_claim_skips_paused_queues(tq: TaskQueue, db: psycopg.Connection,
                                   worker_queues: list[str] | None) -> None:
    for queue in ("a", "b", "c"):
        tq.enqueue_many("t", [{"queue": queue}] * 3)
    assert tq.pause("b") is True
    assert tq.pause("b") is False  # already paused
    expected = [q for q in ("a", "b", "c") if q != "b"
                and (worker_queues is None or q in worker_queues)]
    assert claim(db, tq, worker_queues) == sorted(expected * 3)
    assert tq.resume("b") is True
    assert tq.resume("b") is False
    assert claim(db, tq, worker_queues) == (
        ["b"] * 3 if worker_queues is None or "b" in worker_queues else [])


def test_pause_every_queue_claims_nothing(tq: TaskQueue, db: psycopg.Connection) -> None:
    tq.enqueue_many("t", [{"queue": "a"}, {"queue": "b"}])
    tq.pause("a")
    tq.pause("b")
    assert claim(db, tq, None) == []
    assert claim(db, tq, ["a"]) == []
    assert sorted(tq.paused_queues()) == ["a", "b"]


def test_pause_keeps_the_claim_order_and_priority(tq: TaskQueue,
                                                  db: psycopg.Connection) -> None:
    """With a queue paused, the others' jobs still come in priority, then FIFO, order."""
    low = tq.enqueue("t", queue="a", priority=0)
    high = tq.enqueue("t", queue="c", priority=5)
    tq.enqueue("t", queue="b", priority=9)
    tq.pause("b")
    rows = db.execute(render(tq.schema, worker_sql.CLAIM), {
        "worker_id": 77, "tasks": ["t"], "limit": 1, "lease": 60, "claimers": 2,
        "queues": None}).fetchall()
    assert [row[0] for row in rows] == [high]
    rows = db.execute(render(tq.schema, worker_sql.CLAIM), {
        "worker_id": 77, "tasks": ["t"], "limit": 5, "lease": 60, "claimers": 2,
        "queues": None}).fetchall()
    assert [row[0] for row in rows] == [low]


def _rows_removed(plan: dict) -> int:
    here = plan.get("Rows Removed by Filter", 0) * plan.get("Actual Loops", 1)
    return here + sum(_rows_removed(p) for p in plan.get("Plans", []))


def test_claim_never_walks_a_paused_backlog(tq: TaskQueue, db: psycopg.Connection) -> None:
    """A worker of every queue, with 100,000 jobs of a paused queue ahead of the others
    in claim order (higher priority), claims the others' jobs without reading those."""
    db.execute(f'INSERT INTO "{tq.schema}".jobs (queue, task, priority, max_attempts) '
               "SELECT 'bulk', 't', 5, 1 FROM generate_series(1, 100000)")
    small = tq.enqueue_many("t", [{"queue": "small"}] * 5)
    db.execute(f'ANALYZE "{tq.schema}".jobs')
    tq.pause("bulk")
    plan = explain_claim(db, tq.schema, tasks=["t"], queues=None, limit=5)
    assert _rows_removed(plan) < 1000
    rows = db.execute(render(tq.schema, worker_sql.CLAIM), {
        "worker_id": 77, "tasks": ["t"], "limit": 5, "lease": 60, "claimers": 2,
        "queues": None}).fetchall()
    assert sorted(row[0] for row in rows) == small


def test_bad_queue_name_changes_nothing(pgtaskq_dsn: str, tq: TaskQueue) -> None:
    with pytest.raises(ValueError, match="invalid queue name"):
        tq.pause("")
    out = cli_run(pgtaskq_dsn, tq, "pause", "good", "bad name", code=1)
    assert "invalid queue name 'bad name'" in out
    assert tq.paused_queues() == {}


def test_stats_shows_paused_queues(pgtaskq_dsn: str, tq: TaskQueue,
                                   db: psycopg.Connection) -> None:
    tq.enqueue("t", queue="mail")
    tq.pause("mail")
    tq.pause("empty")  # no job: still listed, so it can be resumed from a dashboard
    snapshot = collect(db, tq.schema)
    assert {q.queue: q.paused for q in snapshot.queues} == {"mail": True, "empty": True}
    assert set(snapshot.to_json()["paused_queues"]) == {"mail", "empty"}
    out = cli_run(pgtaskq_dsn, tq, "stats")
    assert "PAUSED queues: empty, mail (" in out
    listed = cli_run(pgtaskq_dsn, tq, "pause")
    assert listed.startswith("empty\tpaused since ")
    assert "queue mail: resumed" in cli_run(pgtaskq_dsn, tq, "resume", "mail")
    assert "queue mail: was not paused" in cli_run(pgtaskq_dsn, tq, "resume", "mail")
    assert "PAUSED queues: empty" in cli_run(pgtaskq_dsn, tq, "stats")


def test_workers_stop_within_a_second_and_resume_at_once(
    pgtaskq_dsn: str, tq: TaskQueue, db: psycopg.Connection, worker_process
) -> None:
    """Two real workers (one of every queue, one of two named queues) drain 'mail'; the
    operator pauses it from the shell: within a second no job of it starts on either,
    while 'other' keeps running; on resume both start again without waiting for a poll."""
    create_runs_table(db, tq.schema)
    # a poll interval far above the second, so only the wake-up can explain a quick resume
    slow_poll = [a if a != "0.5" else "30" for a in FAST]
    workers = [worker_process("apps.basic:tq", "-c", "2", *slow_poll),
               worker_process("apps.basic:tq", "-c", "2", "-q", "mail", "-q", "other",
                              *slow_poll)]
    for worker in workers:
        worker.wait_ready()
    tq.enqueue_many("sleep", [{"args": [0.05], "queue": "mail"}] * 400)

    def started_mail(after: str = "-infinity") -> int:
        return db.execute(
            f'SELECT count(*) FROM "{tq.schema}".test_runs r JOIN ('
            f'SELECT id, queue FROM "{tq.schema}".jobs UNION ALL '
            f'SELECT id, queue FROM "{tq.schema}".job_history) j ON j.id = r.job_id '
            "WHERE r.kind = 'started' AND j.queue = 'mail' AND r.at > %s::timestamptz",
            (after,)).fetchone()[0]

    wait_until(lambda: started_mail() >= 10, 20, what="workers draining 'mail'")
    assert "queue mail: paused" in cli_run(pgtaskq_dsn, tq, "pause", "mail")
    (paused_at,) = db.execute("SELECT now()").fetchone()
    one_second_later = (paused_at.timestamp() + 1.0)
    db.execute(f'CREATE TABLE "{tq.schema}".marks (at timestamptz)')
    db.execute(f'INSERT INTO "{tq.schema}".marks VALUES (to_timestamp(%s))',
               (one_second_later,))
    late = f'(SELECT at FROM "{tq.schema}".marks)'

    def started_after_a_second() -> int:
        return db.execute(
            f'SELECT count(*) FROM "{tq.schema}".test_runs r JOIN ('
            f'SELECT id, queue FROM "{tq.schema}".jobs UNION ALL '
            f'SELECT id, queue FROM "{tq.schema}".job_history) j ON j.id = r.job_id '
            f"WHERE r.kind = 'started' AND j.queue = 'mail' AND r.at > {late}"
        ).fetchone()[0]

    other = tq.enqueue("record", ["still served"], queue="other")
    wait_until(lambda: tq.get_job(other).status == "succeeded", 10,  # type: ignore[union-attr]
               what="a job of an unpaused queue runs meanwhile")
    assert_stays_false(started_after_a_second, 2.5,
                       "a job of the paused queue started more than 1 s after the pause")
    left = db.execute(f"SELECT count(*) FROM \"{tq.schema}\".jobs WHERE queue = 'mail' "
                      "AND status = 'queued'").fetchone()[0]
    assert left > 0

    began = time.monotonic()
    assert "queue mail: resumed" in cli_run(pgtaskq_dsn, tq, "resume", "mail")
    wait_until(lambda: started_after_a_second() > 0, 5, what="'mail' runs again")
    assert time.monotonic() - began < 2.0  # the wake-up, not the 30 s poll
    assert all(worker.stop() == 0 for worker in workers)
