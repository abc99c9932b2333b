"""Enqueues notify only workers that wait for a wake-up (schema v9, pgtaskq.worker.waiting).

PostgreSQL serialises the commits of notifying transactions, so an enqueue that nobody waits
for must not notify; one that a waiting worker (or a worker of an earlier release, which
never says) would miss must still. "Not notified" is shown with the sentinel of
test_enqueue_notify: nothing is delivered before a NOTIFY sent afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from test_enqueue_notify import Listener
from worker_helpers import runs

from pgtaskq import TaskQueue
from pgtaskq.testing import wait_until

APP = "apps.basic:tq"
SLOW_POLL = ("--poll-interval", "30", "--heartbeat-interval", "0.3", "--lease", "5")
"""Pickup within seconds then owes nothing to polling."""


@pytest.fixture
def listener(pgtaskq_dsn: str, tq: TaskQueue) -> Iterator[Listener]:
    listening = Listener(pgtaskq_dsn, tq.channel)
    yield listening
    listening.close()


def add_worker(db: psycopg.Connection, schema: str, *, queues: list[str] | None = None,
               waiting: bool = True, old_release: bool = False, stopped: bool = False,
               heartbeat_age: float = 0.0) -> None:
    """A workers row as a worker of this release (or of the previous one) leaves it."""
    if old_release:  # the columns REGISTER_WORKER of schema version 8 writes
        statement = """
            INSERT INTO {}.workers (host, pid, queues, concurrency, pgtaskq_version)
            VALUES ('old', 1, %(queues)s, 1, 'old')"""
    else:
        statement = """
            INSERT INTO {}.workers (host, pid, queues, concurrency, pgtaskq_version,
                                    stopped_at, last_heartbeat_at, announces_waiting,
                                    waiting_since)
            VALUES ('new', 1, %(queues)s, 1, 'new', CASE WHEN %(stopped)s THEN now() END,
                    now() - make_interval(secs => %(age)s), true,
                    CASE WHEN %(waiting)s THEN now() END)"""
    db.execute(sql.SQL(statement).format(sql.Identifier(schema)), {
        "queues": queues, "stopped": stopped, "age": heartbeat_age, "waiting": waiting})


def waiting_since(db: psycopg.Connection, schema: str) -> list[object]:
    return [row[0] for row in db.execute(sql.SQL(
        "SELECT waiting_since FROM {}.workers WHERE stopped_at IS NULL ORDER BY id").format(
            sql.Identifier(schema))).fetchall()]


def test_nobody_waiting_no_notify(tq: TaskQueue, listener: Listener, pgtaskq_dsn: str) -> None:
    tq.enqueue("mail.send", queue="mail")
    tq.enqueue("mail.send", queue="mail", dedupe_key="k")
    tq.enqueue_many("mail.send", [{}, {"queue": "other"}])
    with psycopg.connect(pgtaskq_dsn) as conn:
        tq.enqueue("mail.send", queue="mail", conn=conn)
    listener.assert_nothing_before_sentinel()


def test_a_waiting_worker_of_the_queue_is_notified(
        tq: TaskQueue, listener: Listener, db: psycopg.Connection) -> None:
    add_worker(db, tq.schema, queues=["mail"])
    tq.enqueue("reports.build", queue="reports")
    listener.assert_nothing_before_sentinel()
    tq.enqueue("mail.send", queue="mail")
    assert listener.next_payload() == "q:mail"
    tq.enqueue("mail.send", queue="mail", dedupe_key="k")
    assert listener.next_payload() == "q:mail"
    tq.enqueue_many("mail.send", [{"queue": "reports"}, {"queue": "mail"}])
    assert listener.next_payload() == "q:mail"
    listener.assert_nothing_before_sentinel()


@pytest.mark.parametrize("worker", [
    {"waiting": False}, {"stopped": True}, {"heartbeat_age": 3600.0},
])
def test_busy_stopped_or_lost_workers_are_not_notified(
        tq: TaskQueue, listener: Listener, db: psycopg.Connection, worker: dict) -> None:
    add_worker(db, tq.schema, **worker)
    tq.enqueue("mail.send", queue="mail")
    tq.enqueue_many("mail.send", [{}, {}])
    listener.assert_nothing_before_sentinel()


def test_a_worker_of_the_earlier_release_gets_every_wake_up(
        tq: TaskQueue, listener: Listener, db: psycopg.Connection) -> None:
    """During a rolling deploy, workers that predate schema version 9 never announce that
    they wait: producers of this release must go on waking them, as before."""
    add_worker(db, tq.schema, old_release=True)
    tq.enqueue("mail.send", queue="mail")
    assert listener.next_payload() == "q:mail"
    tq.enqueue_many("mail.send", [{}, {"queue": "other"}])
    assert listener.next_payload() == "q:default,other"


def test_repeatable_read_notifies_whenever_a_worker_may_wait(
        tq: TaskQueue, listener: Listener, pgtaskq_dsn: str, db: psycopg.Connection) -> None:
    """Its snapshot may predate a worker's announcement, so ``wake_wanted()`` cannot tell
    and says yes, whatever queue the waiting worker serves. The wake gate is read without
    a snapshot, after the INSERT, so while it is closed (nobody waits) not notifying is as
    safe as in READ COMMITTED: an announcement after the read sees this transaction in
    progress (schema version 11; before it, such enqueues always notified)."""
    def enqueue_repeatable_read() -> None:
        with psycopg.connect(pgtaskq_dsn) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.execute("SELECT 1")  # the snapshot is taken here, before the INSERT
            tq.enqueue("mail.send", queue="mail", conn=conn)

    enqueue_repeatable_read()
    listener.assert_nothing_before_sentinel()
    add_worker(db, tq.schema, queues=["reports"])
    enqueue_repeatable_read()
    assert listener.next_payload() == "q:mail"


def test_an_idle_worker_announces_and_is_woken_at_once(
        tq, db, runs_table, worker_process) -> None:
    worker = worker_process(APP, "-c", "2", *SLOW_POLL)
    worker.wait_ready()
    wait_until(lambda: waiting_since(db, tq.schema) == [waiting_since(db, tq.schema)[0]]
               and waiting_since(db, tq.schema)[0] is not None, what="worker announced")
    for value in range(3):
        started = time.monotonic()
        tq.enqueue("record", args=[value])
        wait_until(lambda n=value + 1: len(runs(db, tq.schema, "ran")) == n, timeout=5,
                   interval=0.002, what="job picked up")
        assert time.monotonic() - started < 2.0  # not the 30 s poll
    assert waiting_since(db, tq.schema)[0] is not None  # still waiting: nothing to undo


def test_a_busy_worker_withdraws_and_announces_again_when_drained(
        tq, db, runs_table, worker_process, listener) -> None:
    worker = worker_process(APP, "-c", "1", "--prefetch", "0", *SLOW_POLL)
    worker.wait_ready()
    wait_until(lambda: waiting_since(db, tq.schema)[0] is not None, what="worker announced")
    ids = tq.enqueue_many("sleep", [{"args": [0.4]} for _ in range(4)])
    assert listener.next_payload() == "q:default"  # it was waiting
    wait_until(lambda: waiting_since(db, tq.schema)[0] is None, what="worker withdrew")
    tq.enqueue("record", args=["busy"])
    listener.assert_nothing_before_sentinel()  # busy: nobody woken, no NOTIFY
    # a busy worker never waits for the poll interval: the backlog runs back to back
    wait_until(lambda: len(runs(db, tq.schema, "ran")) == 1, timeout=10,
               what="backlog drained")
    # the completer writes outcomes in batches: the last sleep's may trail the record's run
    wait_until(lambda: all(tq.get_job(i).status == "succeeded" for i in ids), timeout=10,
               what="the backlog's outcomes written")
    wait_until(lambda: waiting_since(db, tq.schema)[0] is not None, what="announced again")
    tq.enqueue("record", args=["idle"])
    assert listener.next_payload() == "q:default"


def test_a_producer_that_crossed_the_announcement_is_picked_up(
        tq, db, runs_table, worker_process, pgtaskq_dsn) -> None:
    """The race the handshake closes: the producer reads "nobody waits" (and does not
    notify), the worker then announces and claims before the producer commits, and sleeps.
    The worker saw the producer's transaction in progress right after announcing, and
    claims again when it ends: the job runs at once, not at the next poll (30 s)."""
    worker = worker_process(APP, "-c", "1", "--prefetch", "0", *SLOW_POLL)
    worker.wait_ready()
    tq.enqueue_many("sleep", [{"args": [0.3]} for _ in range(3)])
    wait_until(lambda: waiting_since(db, tq.schema)[0] is None, what="worker withdrew")
    with psycopg.connect(pgtaskq_dsn) as conn:
        tq.enqueue("record", args=["crossed"], conn=conn)  # reads: nobody waits
        wait_until(lambda: waiting_since(db, tq.schema)[0] is not None, timeout=10,
                   what="worker announced after the backlog")
        time.sleep(0.1)  # let it claim (nothing: not committed) and go to sleep
        assert runs(db, tq.schema, "ran") == []
        conn.commit()
        committed = time.monotonic()
    wait_until(lambda: runs(db, tq.schema, "ran"), timeout=10, what="crossed job picked up")
    assert time.monotonic() - committed < 3.0


def test_stopped_workers_rows_do_not_slow_wake_wanted(db: psycopg.Connection,
                                                      tq: TaskQueue) -> None:
    """A stopped worker's row stays a day; with restarts and recycling that is thousands of
    rows, and every enqueue of a due job calls wake_wanted(): it must not scan them."""
    workers = sql.SQL("{}.workers").format(sql.Identifier(tq.schema))
    db.execute(sql.SQL(
        "INSERT INTO {} (host, pid, queues, concurrency, pgtaskq_version, heartbeat_interval,"
        " announces_waiting, stopped_at) SELECT 'gone', g, NULL, 8, 'old', 5, true, now() "
        "FROM generate_series(1, 5000) AS g").format(workers))
    db.execute(sql.SQL("ANALYZE {}").format(workers))

    def rows_read() -> int:
        db.execute("SELECT pg_stat_force_next_flush()")  # flushed as this statement ends
        return db.execute(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
            "FROM pg_stat_user_tables WHERE relid = %s::regclass",
            (f'"{tq.schema}".workers',)).fetchone()[0]

    before = rows_read()
    for _ in range(10):
        db.execute(sql.SQL("SELECT {}.wake_wanted('default')").format(
            sql.Identifier(tq.schema)))
    read = rows_read() - before
    assert read < 100, f"10 calls of wake_wanted() read {read:,} rows of workers"
