"""``get_job``, ``list_jobs``, ``cancel`` and ``retry`` on a real database.

A job fails only in a worker; to test ``retry`` of a failed job without one, ``fail()``
moves a queued job to the history as the worker's completer would.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from pgtaskq import PgtaskqError, SchemaNotInstalledError, TaskQueue


def fail(db: psycopg.Connection, schema: str, job_id: int, error: str = "ValueError: x") -> None:
    """Finish a queued job as ``failed`` (what the completer does after the last attempt)."""
    db.execute(
        sql.SQL("""
            WITH gone AS (DELETE FROM {s}.jobs WHERE id = %(id)s RETURNING *)
            INSERT INTO {s}.job_history
                (id, queue, task, args, kwargs, status, priority, run_at, attempts,
                 max_attempts, dedupe_key, schedule, worker_id, created_at, started_at,
                 finished_at, last_error)
            SELECT id, queue, task, args, kwargs, 'failed', priority, run_at, max_attempts,
                   max_attempts, dedupe_key, schedule, 1, created_at, now(), now(), %(error)s
            FROM gone
        """).format(s=sql.Identifier(schema)),
        {"id": job_id, "error": error},
    )


def test_get_job_of_unknown_id_is_none(tq: TaskQueue) -> None:
    assert tq.get_job(123456789) is None


def test_get_job_fields(tq: TaskQueue) -> None:
    job_id = tq.enqueue("t", args=[1], kwargs={"a": "b"}, dedupe_key="d", priority=2)
    job = tq.get_job(job_id)
    assert job is not None
    assert (job.id, job.task, job.queue, job.status, job.args, job.kwargs, job.priority,
            job.attempts, job.max_attempts, job.dedupe_key) == (
        job_id, "t", "default", "queued", [1], {"a": "b"}, 2, 0, 20, "d")
    assert job.created_at.tzinfo is not None
    assert (job.started_at, job.finished_at, job.last_error, job.result) == (
        None, None, None, None)
    assert job.to_dict()["run_at"] == job.run_at.isoformat()


def test_cancel_queued_job_moves_it_to_history(tq: TaskQueue, db: psycopg.Connection) -> None:
    job_id = tq.enqueue("t", args=[1])
    assert tq.cancel(job_id) is True
    job = tq.get_job(job_id)
    assert job is not None
    assert (job.status, job.args) == ("cancelled", [1])
    assert job.finished_at is not None
    row = db.execute(
        sql.SQL("SELECT count(*) FROM {}.jobs").format(sql.Identifier(tq.schema))
    ).fetchone()
    assert row == (0,)  # the hot table holds live jobs only


def test_cancel_twice_unknown_or_finished_is_false(tq: TaskQueue, db: psycopg.Connection) -> None:
    job_id = tq.enqueue("t")
    assert tq.cancel(job_id)
    assert tq.cancel(job_id) is False
    assert tq.cancel(987654321) is False
    failed = tq.enqueue("t")
    fail(db, tq.schema, failed)
    assert tq.cancel(failed) is False
    assert tq.get_job(failed).status == "failed"  # type: ignore[union-attr]


def test_cancel_in_the_callers_transaction(pgtaskq_dsn: str, tq: TaskQueue) -> None:
    job_id = tq.enqueue("t")
    with psycopg.connect(pgtaskq_dsn) as conn:
        assert tq.cancel(job_id, conn=conn)
        conn.rollback()
    assert tq.get_job(job_id).status == "queued"  # type: ignore[union-attr]


def test_retry_cancelled_job(tq: TaskQueue) -> None:
    job_id = tq.enqueue("t", args=[5], priority=3)
    tq.cancel(job_id)
    assert tq.retry(job_id) is True
    job = tq.get_job(job_id)
    assert job is not None
    assert (job.status, job.args, job.priority, job.attempts) == ("queued", [5], 3, 0)


def test_retry_failed_job_keeps_its_last_error(tq: TaskQueue, db: psycopg.Connection) -> None:
    job_id = tq.enqueue("t", max_attempts=2)
    fail(db, tq.schema, job_id, "ValueError: boom")
    assert tq.get_job(job_id).attempts == 2  # type: ignore[union-attr]
    assert tq.retry(job_id)
    job = tq.get_job(job_id)
    assert job is not None
    assert (job.status, job.attempts, job.max_attempts) == ("queued", 0, 2)
    assert job.last_error == "ValueError: boom"
    assert job.finished_at is None


def test_retry_of_queued_or_unknown_job_is_false(tq: TaskQueue) -> None:
    job_id = tq.enqueue("t")
    assert tq.retry(job_id) is False
    assert tq.retry(55555555) is False


def test_retry_sends_a_wake_up(pgtaskq_dsn: str, tq: TaskQueue) -> None:
    job_id = tq.enqueue("t", queue="again")
    tq.cancel(job_id)
    with psycopg.connect(pgtaskq_dsn, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(tq.channel)))
        tq.retry(job_id)
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert len(payloads) == 1 and "again" in payloads[0]


def test_retry_refused_while_the_dedupe_key_is_taken(tq: TaskQueue) -> None:
    old = tq.enqueue("t", dedupe_key="k")
    tq.cancel(old)
    new = tq.enqueue("t", dedupe_key="k")
    with pytest.raises(PgtaskqError, match="dedupe_key"):
        tq.retry(old)
    assert tq.get_job(old).status == "cancelled"  # type: ignore[union-attr]
    tq.cancel(new)
    assert tq.retry(old)


@pytest.fixture
def mixed(tq: TaskQueue, db: psycopg.Connection) -> Iterator[dict[str, int]]:
    ids = {
        "mail": tq.enqueue("mail.send", queue="mail"),
        "report": tq.enqueue("reports.build", queue="reports"),
        "cancelled": tq.enqueue("reports.build", queue="reports"),
        "failed": tq.enqueue("mail.send", queue="mail"),
    }
    tq.cancel(ids["cancelled"])
    fail(db, tq.schema, ids["failed"])
    yield ids


def test_list_jobs_newest_first_across_live_and_history(
    tq: TaskQueue, mixed: dict[str, int]
) -> None:
    assert [j.id for j in tq.list_jobs()] == sorted(mixed.values(), reverse=True)
    assert [j.id for j in tq.list_jobs(limit=2)] == [mixed["failed"], mixed["cancelled"]]


def test_list_jobs_filters(tq: TaskQueue, mixed: dict[str, int]) -> None:
    assert [j.id for j in tq.list_jobs(status="failed")] == [mixed["failed"]]
    assert [j.id for j in tq.list_jobs(status="queued")] == [mixed["report"], mixed["mail"]]
    assert tq.list_jobs(status="running") == []
    assert [j.id for j in tq.list_jobs(task="mail.send")] == [mixed["failed"], mixed["mail"]]
    assert [j.id for j in tq.list_jobs(queue="reports", status="cancelled")] == [
        mixed["cancelled"]]


def test_list_jobs_unknown_status(tq: TaskQueue) -> None:
    with pytest.raises(ValueError, match="unknown status"):
        tq.list_jobs(status="exploded")


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_errors_on_a_callers_connection_are_pgtaskq_errors(
    pgtaskq_dsn: str, tq: TaskQueue, driver: str
) -> None:
    """Whatever driver the caller's connection uses, a missing schema and a refused retry
    raise pgtaskq's errors, not the driver's."""
    import psycopg2

    old = tq.enqueue("t", dedupe_key="k")
    tq.cancel(old)
    tq.enqueue("t", dedupe_key="k")
    bare = TaskQueue(pgtaskq_dsn, schema=tq.schema + "_none")
    connect = psycopg.connect if driver == "psycopg" else psycopg2.connect
    conn = connect(pgtaskq_dsn)
    try:
        with pytest.raises(PgtaskqError, match="dedupe_key"):
            tq.retry(old, conn=conn)
        conn.rollback()
        with pytest.raises(SchemaNotInstalledError, match=r"run 'pgtaskq --schema \S+ install'"):
            bare.enqueue("t", conn=conn)
        conn.rollback()
    finally:
        conn.close()
        bare.close()  # left to the garbage collector, its pool may be collected in its own thread
