"""Dedupe under concurrency: a second enqueue of a key another transaction holds.

The second INSERT waits on the first transaction's uncommitted row. When that commits, the
waiting statement's snapshot still cannot see the row, so enqueue must look again and
return the committed job's id; when it rolls back, the waiting INSERT goes ahead. The test
waits (with a deadline) until PostgreSQL reports the second statement blocked on a lock,
so the race is forced every time rather than hoped for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from pgtaskq import TaskQueue
from pgtaskq.testing import wait_until


@pytest.fixture
def holder(pgtaskq_dsn: str, tq: TaskQueue) -> Iterator[psycopg.Connection]:
    """The first transaction; closed (so rolled back if still open) before the schema goes."""
    with psycopg.connect(pgtaskq_dsn) as conn:
        yield conn


class Background:
    """Run ``func`` in a thread and keep its result or exception."""

    def __init__(self, func: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(func,), daemon=True)
        self.thread.start()

    def _run(self, func: Callable[[], Any]) -> None:
        try:
            self.result = func()
        except BaseException as exc:  # handed to the test thread
            self.error = exc

    def join(self) -> Any:
        self.thread.join(10)
        assert not self.thread.is_alive(), "enqueue still blocked"
        if self.error is not None:
            raise self.error
        return self.result


def wait_blocked_on_lock(db: psycopg.Connection, schema: str) -> None:
    def blocked() -> bool:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE %s",
            [f"%{schema}%"],  # the test's schema name is unique on the server
        ).fetchone()
        return row is not None and row[0] > 0

    wait_until(blocked, 10, what="second enqueue blocked on the first one's row")


@pytest.mark.parametrize("many", [False, True], ids=["enqueue", "enqueue_many"])
def test_second_enqueue_returns_the_id_committed_meanwhile(
    tq: TaskQueue, holder: psycopg.Connection, db: psycopg.Connection, many: bool
) -> None:
    first = tq.enqueue("t", dedupe_key="k", conn=holder)
    if many:
        second = Background(lambda: tq.enqueue_many("t", [{"dedupe_key": "k"}, {}]))
    else:
        second = Background(lambda: tq.enqueue("t", dedupe_key="k"))
    wait_blocked_on_lock(db, tq.schema)
    holder.commit()
    result = second.join()
    assert (result[0] if many else result) == first
    assert len(tq.list_jobs()) == (2 if many else 1)


def test_second_enqueue_inserts_when_the_first_rolls_back(
    tq: TaskQueue, holder: psycopg.Connection, db: psycopg.Connection
) -> None:
    first = tq.enqueue("t", dedupe_key="k", conn=holder)
    second = Background(lambda: tq.enqueue("t", dedupe_key="k"))
    wait_blocked_on_lock(db, tq.schema)
    holder.rollback()
    second_id = second.join()
    assert second_id != first
    job = tq.get_job(second_id)
    assert job is not None and job.dedupe_key == "k"
