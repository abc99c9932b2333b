"""Enqueue on a real PostgreSQL: transactions, stored options, dedupe, enqueue_many.

``conn=`` must write in the caller's transaction and never commit it, with psycopg 3 and
psycopg2 connections alike; these tests look at the table from a second connection, the
way a worker would.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import psycopg.rows
import psycopg2
import psycopg2.extras
import pytest
from psycopg import sql

from pgtaskq import TaskQueue


def count_jobs(db: psycopg.Connection, schema: str) -> int:
    row = db.execute(
        sql.SQL("SELECT count(*) FROM {}.jobs").format(sql.Identifier(schema))
    ).fetchone()
    assert row is not None
    return int(row[0])


def db_now(db: psycopg.Connection) -> datetime:
    row = db.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]


@pytest.fixture
def pg3(pgtaskq_dsn: str) -> Iterator[psycopg.Connection]:
    """A psycopg 3 connection in transaction mode, as a web request would hold it."""
    with psycopg.connect(pgtaskq_dsn) as conn:
        yield conn


@pytest.fixture
def pg2(pgtaskq_dsn: str) -> Iterator[Any]:
    conn = psycopg2.connect(pgtaskq_dsn)
    try:
        yield conn
    finally:
        conn.close()


class CountingCursor(psycopg.Cursor):
    """Counts the statements pgtaskq sends through a caller's connection."""

    executed: list[str] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        CountingCursor.executed.append(str(query))
        return super().execute(query, params, **kwargs)


@pytest.fixture
def counting(
    pgtaskq_dsn: str, tq: TaskQueue
) -> Iterator[tuple[psycopg.Connection, list[str]]]:
    CountingCursor.executed = []
    with psycopg.connect(pgtaskq_dsn, autocommit=True, cursor_factory=CountingCursor) as conn:
        yield conn, CountingCursor.executed


# -- the caller's transaction -----------------------------------------------------------


@pytest.mark.parametrize("driver", ["pg3", "pg2"])
def test_rollback_leaves_no_job(
    tq: TaskQueue, db: psycopg.Connection, request: pytest.FixtureRequest, driver: str
) -> None:
    conn = request.getfixturevalue(driver)  # after tq: torn down (closed) before tq is

    @tq.task
    def send(to: str) -> None: ...

    job_id = send.using(conn=conn).enqueue("a@example.com")
    many = tq.enqueue_many(send.name, [{"args": ["b"]}, {"args": ["c"]}], conn=conn)
    assert count_jobs(db, tq.schema) == 0  # not visible before commit
    conn.rollback()
    assert count_jobs(db, tq.schema) == 0
    assert tq.get_job(job_id) is None
    assert all(tq.get_job(i) is None for i in many)


@pytest.mark.parametrize("driver", ["pg3", "pg2"])
def test_commit_makes_the_job_visible(
    tq: TaskQueue, db: psycopg.Connection, request: pytest.FixtureRequest, driver: str
) -> None:
    conn = request.getfixturevalue(driver)  # after tq: torn down (closed) before tq is
    job_id = tq.enqueue("mail.send", args=["a"], conn=conn)
    many = tq.enqueue_many("mail.send", [{"args": ["b"]}, {"kwargs": {"x": 1}}], conn=conn)
    assert tq.get_job(job_id) is None
    conn.commit()
    job = tq.get_job(job_id)
    assert job is not None and (job.status, job.args) == ("queued", ["a"])
    assert [tq.get_job(i).args for i in many] == [["b"], []]  # type: ignore[union-attr]
    assert count_jobs(db, tq.schema) == 3


def test_enqueue_does_not_commit_or_change_the_callers_connection(
    tq: TaskQueue, pg3: psycopg.Connection
) -> None:
    pg3.execute("SELECT 1")
    tq.enqueue("t", conn=pg3)
    tq.enqueue_many("t", [{}], conn=pg3)
    assert pg3.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert pg3.autocommit is False
    pg3.rollback()


def test_without_conn_the_job_is_committed_at_once(tq: TaskQueue, db: psycopg.Connection) -> None:
    tq.enqueue("t")
    assert count_jobs(db, tq.schema) == 1


def test_unknown_task_name_is_accepted_and_stays_queued(tq: TaskQueue) -> None:
    job_id = tq.enqueue("nobody.registered.this", args=[1])
    job = tq.get_job(job_id)
    assert job is not None
    assert (job.status, job.queue, job.max_attempts) == ("queued", "default", 20)


# -- stored options ---------------------------------------------------------------------


def test_task_defaults_are_stored(tq: TaskQueue) -> None:
    @tq.task(name="reports.build", queue="reports", priority=7, max_attempts=4)
    def build(report_id: int, fmt: str = "pdf") -> None: ...

    job = tq.get_job(build.enqueue(3, fmt="csv"))
    assert job is not None
    assert (job.task, job.queue, job.priority, job.max_attempts, job.args, job.kwargs) == (
        "reports.build", "reports", 7, 4, [3], {"fmt": "csv"})
    assert build(1) is None  # still a plain function


def test_using_overrides_are_stored(tq: TaskQueue, db: psycopg.Connection) -> None:
    @tq.task(queue="reports", priority=7)
    def build() -> None: ...

    before = db_now(db)
    job = tq.get_job(
        build.using(queue="mail", priority=-3, delay=90, max_attempts=2).enqueue()
    )
    assert job is not None
    assert (job.queue, job.priority, job.max_attempts) == ("mail", -3, 2)
    assert before + timedelta(seconds=89) <= job.run_at <= db_now(db) + timedelta(seconds=91)


def test_run_at_is_stored_exactly(tq: TaskQueue) -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=timezone(timedelta(hours=2)))
    job = tq.get_job(tq.enqueue("t", run_at=when))
    assert job is not None and job.run_at == when


def test_run_at_in_the_past_is_runnable(tq: TaskQueue) -> None:
    when = datetime(2001, 1, 1, tzinfo=timezone.utc)
    job = tq.get_job(tq.enqueue("t", run_at=when))
    assert job is not None and job.run_at == when and job.status == "queued"


def test_no_delay_means_now(tq: TaskQueue, db: psycopg.Connection) -> None:
    before = db_now(db)
    job = tq.get_job(tq.enqueue("t"))
    assert job is not None and before <= job.run_at <= db_now(db)


def test_json_arguments_round_trip(tq: TaskQueue) -> None:
    args = [None, True, 1.5, "é\u2603", [1, {"a": [2]}], 2**62]
    kwargs = {"nested": {"list": [1, 2], "none": None}, "empty": ""}
    job = tq.get_job(tq.enqueue("t", args=args, kwargs=kwargs))
    assert job is not None and (job.args, job.kwargs) == (args, kwargs)


# -- dedupe -----------------------------------------------------------------------------


def test_dedupe_key_returns_the_existing_id(tq: TaskQueue, db: psycopg.Connection) -> None:
    first = tq.enqueue("t", args=[1], dedupe_key="welcome:42")
    assert tq.enqueue("t", args=[2], dedupe_key="welcome:42") == first
    assert tq.get_job(first).args == [1]  # type: ignore[union-attr]
    assert tq.enqueue("t", dedupe_key="welcome:43") != first
    assert count_jobs(db, tq.schema) == 2


def test_dedupe_key_is_free_again_once_the_job_finished(tq: TaskQueue) -> None:
    first = tq.enqueue("t", dedupe_key="k")
    assert tq.cancel(first)
    second = tq.enqueue("t", dedupe_key="k")
    assert second != first
    assert tq.get_job(second).status == "queued"  # type: ignore[union-attr]


def test_dedupe_inside_the_callers_transaction(tq: TaskQueue, pg3: psycopg.Connection) -> None:
    first = tq.enqueue("t", dedupe_key="k", conn=pg3)
    assert tq.enqueue("t", dedupe_key="k", conn=pg3) == first
    pg3.commit()
    assert tq.enqueue("t", dedupe_key="k") == first


def test_enqueue_many_dedupes_within_the_batch_and_against_the_table(
    tq: TaskQueue, db: psycopg.Connection
) -> None:
    existing = tq.enqueue("t", dedupe_key="old")
    ids = tq.enqueue_many("t", [
        {"args": [0], "dedupe_key": "a"},
        {"args": [1]},
        {"args": [2], "dedupe_key": "old"},
        {"args": [3], "dedupe_key": "a"},
        {"args": [4], "dedupe_key": "b"},
        {"args": [5]},
        {"args": [6], "dedupe_key": "b"},
    ])
    assert ids[2] == existing
    assert ids[3] == ids[0] and ids[6] == ids[4]
    assert len({ids[0], ids[1], ids[4], ids[5], existing}) == 5
    assert count_jobs(db, tq.schema) == 5
    # the first item of each new key wins: its arguments are the ones stored
    assert [tq.get_job(ids[i]).args for i in (0, 1, 4, 5)] == [[0], [1], [4], [5]]  # type: ignore[union-attr]


def test_enqueue_many_with_only_known_keys_creates_nothing(tq: TaskQueue) -> None:
    a = tq.enqueue("t", dedupe_key="a")
    b = tq.enqueue("t", dedupe_key="b")
    assert tq.enqueue_many("t", [{"dedupe_key": "b"}, {"dedupe_key": "a"}]) == [b, a]
    assert len(tq.list_jobs()) == 2


# -- enqueue_many -----------------------------------------------------------------------


def test_enqueue_many_returns_ids_in_input_order(tq: TaskQueue) -> None:
    items = [{"args": [i], "priority": (i * 7) % 5 - 2} for i in range(200)]
    ids = tq.enqueue_many("t", items)
    assert len(ids) == len(set(ids)) == 200
    for job_id, item in zip(ids, items, strict=True):
        job = tq.get_job(job_id)
        assert job is not None
        assert (job.args, job.priority) == (item["args"], item["priority"])


def test_enqueue_many_per_item_options(tq: TaskQueue, db: psycopg.Connection) -> None:
    when = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    before = db_now(db)
    ids = tq.enqueue_many("t", [
        {"args": [1], "kwargs": {"k": "v"}, "queue": "q1", "priority": 9, "max_attempts": 2},
        {"run_at": when},
        {"delay": 60},
    ])
    first, second, third = (tq.get_job(i) for i in ids)
    assert first is not None and second is not None and third is not None
    assert (first.args, first.kwargs, first.queue, first.priority, first.max_attempts) == (
        [1], {"k": "v"}, "q1", 9, 2)
    assert (second.queue, second.run_at) == ("default", when)
    assert third.run_at >= before + timedelta(seconds=59)


def test_enqueue_many_of_nothing(tq: TaskQueue) -> None:
    assert tq.enqueue_many("t", []) == []


def test_enqueue_many_is_one_statement(
    counting: tuple[psycopg.Connection, list[str]], tq: TaskQueue
) -> None:
    conn, executed = counting
    ids = tq.enqueue_many(
        "t", [{"args": [i], "dedupe_key": f"k{i % 10}" if i % 3 else None} for i in range(100)],
        conn=conn,
    )
    assert len(executed) == 1, executed
    assert len(ids) == 100
    executed.clear()
    tq.enqueue_many("t", [{"dedupe_key": "k1"}, {"args": [1]}], conn=conn)  # key now taken
    assert len(executed) == 1, executed


def test_single_enqueue_is_one_statement(
    counting: tuple[psycopg.Connection, list[str]], tq: TaskQueue
) -> None:
    conn, executed = counting
    tq.enqueue("t", conn=conn)
    tq.enqueue("t", dedupe_key="d", conn=conn)
    tq.enqueue("t", dedupe_key="d", conn=conn)
    assert len(executed) == 3, executed


def _pg3(dsn: str, row_factory: Any) -> Any:
    return psycopg.connect(dsn, row_factory=row_factory)


def _pg2(dsn: str, cursor_factory: Any) -> Any:
    return psycopg2.connect(dsn, cursor_factory=cursor_factory)


@pytest.mark.parametrize(
    "connect",
    [
        lambda dsn: _pg3(dsn, psycopg.rows.dict_row),
        lambda dsn: _pg3(dsn, psycopg.rows.namedtuple_row),
        lambda dsn: _pg2(dsn, psycopg2.extras.RealDictCursor),
        lambda dsn: _pg2(dsn, psycopg2.extras.DictCursor),
        lambda dsn: _pg2(dsn, psycopg2.extras.NamedTupleCursor),
    ],
    ids=["pg3-dict_row", "pg3-namedtuple_row", "pg2-RealDictCursor", "pg2-DictCursor",
         "pg2-NamedTupleCursor"],
)
def test_callers_connection_may_return_dict_rows(
    tq: TaskQueue, pgtaskq_dsn: str, connect: Any
) -> None:
    conn = connect(pgtaskq_dsn)
    try:
        job_id = tq.enqueue("t", args=[1], dedupe_key="k", conn=conn)
        assert tq.enqueue("t", dedupe_key="k", conn=conn) == job_id
        ids = tq.enqueue_many("t", [{"dedupe_key": "k"}, {"args": [2]}], conn=conn)
        assert ids[0] == job_id
        assert tq.cancel(ids[1], conn=conn) is True
        assert tq.retry(ids[1], conn=conn) is True
        conn.commit()
    finally:
        conn.close()
    assert [(j.id, j.status) for j in tq.list_jobs()] == [(ids[1], "queued"), (job_id, "queued")]


def test_task_arguments_never_clash_with_enqueue_options(tq: TaskQueue) -> None:
    @tq.task(queue="mail")
    def notify(queue: str, priority: int, conn: str, delay: int) -> None: ...

    job = tq.get_job(notify.enqueue(queue="q", priority=9, conn="c", delay=5))
    assert job is not None
    assert job.kwargs == {"queue": "q", "priority": 9, "conn": "c", "delay": 5}
    assert (job.queue, job.priority) == ("mail", 0)
    job = tq.get_job(notify.using(priority=3).enqueue("q", 9, conn="c", delay=5))
    assert job is not None
    assert (job.args, job.kwargs, job.priority) == (["q", 9], {"conn": "c", "delay": 5}, 3)
