"""The wake-up NOTIFY of enqueue, heard by a real LISTENing connection.

"Not delivered yet" is shown without a timing window: after the action under test, another
connection sends a sentinel NOTIFY on the same channel and commits. PostgreSQL delivers a
channel's notifications in commit order, so if the sentinel is the next thing the listener
hears, nothing was delivered before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql

from pgtaskq import TaskQueue

SENTINEL = "sentinel"


class Listener:
    """A LISTENing autocommit connection on the queue's channel."""

    def __init__(self, dsn: str, channel: str) -> None:
        self.channel = channel
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        self.sender = psycopg.connect(dsn, autocommit=True)

    def next_payload(self, timeout: float = 5.0) -> str:
        for notify in self.conn.notifies(timeout=timeout, stop_after=1):
            assert notify.channel == self.channel
            return notify.payload
        pytest.fail(f"no notification on {self.channel} within {timeout}s")

    def assert_nothing_before_sentinel(self) -> None:
        self.sender.execute("SELECT pg_notify(%s, %s)", (self.channel, SENTINEL))
        assert self.next_payload() == SENTINEL

    def close(self) -> None:
        self.conn.close()
        self.sender.close()


@pytest.fixture
def listener(pgtaskq_dsn: str, tq: TaskQueue) -> Iterator[Listener]:
    """A listener that enqueues always wake: it stands for a worker of an earlier release
    (registered without ``announces_waiting``), which gets every wake-up. Which enqueues
    notify whom is tested in test_wake_wanted.py."""
    with psycopg.connect(pgtaskq_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL(
            "INSERT INTO {}.workers (host, pid, concurrency, pgtaskq_version) "
            "VALUES ('old-release', 1, 1, '0.earlier')").format(sql.Identifier(tq.schema)))
    listening = Listener(pgtaskq_dsn, tq.channel)
    yield listening
    listening.close()


@pytest.fixture
def conn(pgtaskq_dsn: str, tq: TaskQueue) -> Iterator[psycopg.Connection]:
    """The caller's connection, in transaction mode (closed before the schema is dropped)."""
    with psycopg.connect(pgtaskq_dsn) as caller:
        yield caller


def test_notify_arrives_only_after_commit(
    tq: TaskQueue, listener: Listener, conn: psycopg.Connection
) -> None:
    tq.enqueue("mail.send", queue="mail", conn=conn)
    listener.assert_nothing_before_sentinel()
    conn.commit()
    payload = listener.next_payload()
    assert "mail" in payload
    listener.assert_nothing_before_sentinel()  # one statement, one notification


def test_no_notify_on_rollback(tq: TaskQueue, listener: Listener, conn: psycopg.Connection) -> None:
    tq.enqueue("mail.send", queue="mail", conn=conn)
    tq.enqueue_many("mail.send", [{}, {}], conn=conn)
    conn.rollback()
    listener.assert_nothing_before_sentinel()


def test_notify_without_conn_names_the_queue(tq: TaskQueue, listener: Listener) -> None:
    tq.enqueue("reports.build", queue="reports")
    assert "reports" in listener.next_payload()


def test_task_queue_is_in_the_payload(tq: TaskQueue, listener: Listener) -> None:
    @tq.task(queue="thumbnails")
    def resize() -> None: ...

    resize.enqueue()
    assert "thumbnails" in listener.next_payload()


def test_no_notify_for_delayed_jobs(tq: TaskQueue, listener: Listener) -> None:
    tq.enqueue("later", queue="later", delay=60)
    tq.enqueue("later", queue="later", run_at=datetime.now(timezone.utc) + timedelta(hours=1))
    tq.enqueue_many("later", [{"delay": 30}, {"delay": 3600, "queue": "other"}])
    listener.assert_nothing_before_sentinel()


def test_no_notify_when_dedupe_returns_an_existing_job(tq: TaskQueue, listener: Listener) -> None:
    tq.enqueue("t", dedupe_key="k")
    assert "default" in listener.next_payload()
    tq.enqueue("t", dedupe_key="k")
    tq.enqueue_many("t", [{"dedupe_key": "k"}])
    listener.assert_nothing_before_sentinel()


def test_enqueue_many_sends_one_notify_naming_every_runnable_queue(
    tq: TaskQueue, listener: Listener
) -> None:
    tq.enqueue_many("t", [
        {"queue": "alpha"}, {"queue": "beta"}, {"queue": "alpha"},
        {"queue": "gamma", "delay": 600},  # not runnable now: not announced
    ])
    payload = listener.next_payload()
    assert "alpha" in payload and "beta" in payload
    assert "gamma" not in payload
    listener.assert_nothing_before_sentinel()


def test_other_schemas_use_other_channels(pgtaskq_dsn: str, tq: TaskQueue) -> None:
    other = TaskQueue(pgtaskq_dsn, schema=tq.schema + "_x")
    assert other.channel != tq.channel
