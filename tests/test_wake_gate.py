"""The wake gate (schema version 11): enqueues ask ``wake_wanted()`` only when it is open.

``wake_wanted()`` cost every enqueue of a due job a PL/pgSQL call (~18 us of server time),
paid even while nobody waits. The gate is one bit in a sequence that producers read
without a snapshot; these tests hold it to its invariant: it is open whenever a live
worker wants wake-ups, so no wake-up is lost, and closed once nobody does, so the call is
skipped. Whom the enqueues notify is tested in test_wake_wanted.py.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import psycopg
import pytest
from psycopg import sql
from test_wake_wanted import SLOW_POLL, add_worker, waiting_since
from worker_helpers import FAST, runs

from pgtaskq import TaskQueue, migrate
from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql
from pgtaskq.testing import wait_until

APP = "apps.basic:tq"


def gate(db: psycopg.Connection, schema: str) -> int | None:
    return db.execute("SELECT pg_sequence_last_value(%s::regclass)",
                      (f'"{schema}".wake_gate',)).fetchone()[0]


def wake_wanted_calls(tq: TaskQueue, dsn: str, enqueue_count: int = 5) -> int:
    """How many times ``enqueue_count`` enqueues of due jobs called ``wake_wanted()``:
    PostgreSQL counts a transaction's own function calls (track_functions)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SET LOCAL track_functions = 'pl'")
        for n in range(enqueue_count):
            tq.enqueue("mail.send", args=[n], queue="mail", conn=conn)
        tq.enqueue("mail.send", queue="mail", dedupe_key=uuid.uuid4().hex, conn=conn)
        tq.enqueue_many("mail.send", [{}, {"queue": "other"}], conn=conn)
        return conn.execute(
            "SELECT coalesce(pg_stat_get_xact_function_calls(%s::regprocedure), 0)",
            (f'"{tq.schema}".wake_wanted(text)',)).fetchone()[0]


def set_waiting(db: psycopg.Connection, schema: str, worker_id: int, waiting: bool) -> None:
    """Announce or withdraw as a worker does (``pgtaskq.worker.waiting``)."""
    db.execute(render(schema, worker_sql.ANNOUNCE_WAITING),
               {"worker_id": worker_id, "waiting": waiting})


def worker_ids(db: psycopg.Connection, schema: str) -> list[int]:
    return [row[0] for row in db.execute(sql.SQL(
        "SELECT id FROM {}.workers ORDER BY id").format(sql.Identifier(schema))).fetchall()]


def test_nobody_waiting_enqueues_skip_wake_wanted(tq: TaskQueue, pgtaskq_dsn: str,
                                                  db: psycopg.Connection) -> None:
    """The call the gate saves; on schema version 10 each of the 8 jobs paid it."""
    assert gate(db, tq.schema) == 0
    assert wake_wanted_calls(tq, pgtaskq_dsn) == 0
    add_worker(db, tq.schema, queues=["mail"])
    assert gate(db, tq.schema) == 1
    assert wake_wanted_calls(tq, pgtaskq_dsn) == 5 + 1 + 2  # two queues in enqueue_many


def test_announcing_opens_withdrawing_and_stopping_close(
        tq: TaskQueue, db: psycopg.Connection) -> None:
    add_worker(db, tq.schema, waiting=False)
    add_worker(db, tq.schema, waiting=False)
    first, second = worker_ids(db, tq.schema)
    assert gate(db, tq.schema) == 0
    set_waiting(db, tq.schema, first, True)
    assert gate(db, tq.schema) == 1
    set_waiting(db, tq.schema, second, True)
    set_waiting(db, tq.schema, first, False)
    assert gate(db, tq.schema) == 1  # the second one still waits
    db.execute(sql.SQL("UPDATE {}.workers SET stopped_at = now() WHERE id = %s").format(
        sql.Identifier(tq.schema)), (second,))
    assert gate(db, tq.schema) == 0


def test_a_worker_of_an_earlier_release_keeps_the_gate_open(
        tq: TaskQueue, db: psycopg.Connection) -> None:
    """It never announces, so it is taken as always waiting: the gate stays open for it."""
    add_worker(db, tq.schema, waiting=True)
    add_worker(db, tq.schema, old_release=True)
    assert gate(db, tq.schema) == 1
    set_waiting(db, tq.schema, worker_ids(db, tq.schema)[0], False)
    assert gate(db, tq.schema) == 1
    db.execute(sql.SQL("SELECT {}.close_wake_gate()").format(sql.Identifier(tq.schema)))
    assert gate(db, tq.schema) == 1


def test_a_lost_waiter_is_closed_out_and_opens_again_if_it_comes_back(
        tq: TaskQueue, db: psycopg.Connection) -> None:
    """A worker that crashed while waiting leaves its row saying so; once its heartbeat is
    stale the rescuer's close ignores it. If it was only cut off and beats again, its
    first heartbeat after the gap opens the gate again."""
    add_worker(db, tq.schema, waiting=True, heartbeat_age=3600.0)
    assert gate(db, tq.schema) == 1  # opened by the insert, whatever the heartbeat
    closed = db.execute(sql.SQL("SELECT {}.close_wake_gate()").format(
        sql.Identifier(tq.schema))).fetchone()[0]
    assert closed and gate(db, tq.schema) == 0
    db.execute(sql.SQL("UPDATE {}.workers SET last_heartbeat_at = now()").format(
        sql.Identifier(tq.schema)))
    assert gate(db, tq.schema) == 1


def test_a_rescuer_closes_the_gate_a_crashed_waiter_left_open(
        tq: TaskQueue, db: psycopg.Connection, worker_process) -> None:
    add_worker(db, tq.schema, waiting=True, heartbeat_age=3600.0)
    assert gate(db, tq.schema) == 1
    worker = worker_process(APP, "-c", "1", *FAST, "--poll-only")  # never announces
    worker.wait_ready()
    wait_until(lambda: gate(db, tq.schema) == 0, timeout=10, what="rescuer closed the gate")


def test_a_real_worker_opens_the_gate_when_idle_and_closes_it_when_busy(
        tq: TaskQueue, db: psycopg.Connection, runs_table, worker_process,
        pgtaskq_dsn: str) -> None:
    worker = worker_process(APP, "-c", "1", "--prefetch", "0", *SLOW_POLL)
    worker.wait_ready()
    wait_until(lambda: waiting_since(db, tq.schema)[0] is not None, what="worker announced")
    assert gate(db, tq.schema) == 1
    tq.enqueue_many("sleep", [{"args": [0.3]} for _ in range(4)])
    wait_until(lambda: waiting_since(db, tq.schema)[0] is None, what="worker withdrew")
    assert gate(db, tq.schema) == 0
    assert wake_wanted_calls(tq, pgtaskq_dsn, 3) == 0  # busy: not even asked
    wait_until(lambda: gate(db, tq.schema) == 1, timeout=15, what="idle again, gate open")


@pytest.mark.parametrize("waiting_row", [False, True])
def test_upgrading_sets_the_gate_from_the_workers_there(
        db: psycopg.Connection, pgtaskq_dsn: str, schema_name: str, waiting_row: bool) -> None:
    with psycopg.connect(pgtaskq_dsn, autocommit=True) as conn:
        migrate.upgrade(conn, schema_name, target=10)
        try:
            if waiting_row:
                add_worker(db, schema_name, waiting=True)
            add_worker(db, schema_name, waiting=False)
            migrate.upgrade(conn, schema_name)
            assert gate(db, schema_name) == (1 if waiting_row else 0)
        finally:
            migrate.uninstall(conn, schema_name)


def test_no_close_overtakes_an_announcement(tq: TaskQueue, pgtaskq_dsn: str,
                                            db: psycopg.Connection) -> None:
    """The invariant under concurrency: once a worker's announcement has committed, the
    gate reads open for as long as it waits, however other workers announce, withdraw and
    close at the same moments. A close that looked before the announcement committed and
    wrote after it would break this (the advisory lock is what prevents it)."""
    for _ in range(4):
        add_worker(db, tq.schema, waiting=False)
    ids = worker_ids(db, tq.schema)
    failures: list[str] = []
    schema = sql.Identifier(tq.schema)

    def churn(worker_id: int, seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(pgtaskq_dsn, autocommit=True) as conn:
            for step in range(150):
                set_waiting(conn, tq.schema, worker_id, True)
                for _ in range(rng.randint(0, 2)):
                    if gate(conn, tq.schema) != 1:
                        failures.append(f"worker {worker_id} step {step}: waiting, gate shut")
                    if rng.random() < 0.5:
                        conn.execute(sql.SQL("SELECT {}.close_wake_gate()").format(schema))
                set_waiting(conn, tq.schema, worker_id, False)

    threads = [threading.Thread(target=churn, args=(worker_id, n))
               for n, worker_id in enumerate(ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures[:5]
    assert gate(db, tq.schema) == 0  # everybody withdrew: the last one closed it


def test_bursty_producers_never_leave_a_job_for_the_poll(
        tq: TaskQueue, db: psycopg.Connection, runs_table, worker_process) -> None:
    """The guarantee the gate must keep, end to end: producers enqueue in bursts and
    pauses while one worker flips between busy (gate closed, nobody notified) and idle
    (announced, gate open). With the poll at 30 s, a wake-up lost at any flip would leave
    a job queued until the poll: every job must start within seconds of its enqueue."""
    worker = worker_process(APP, "-c", "1", "--prefetch", "0", *SLOW_POLL)
    worker.wait_ready()
    wait_until(lambda: waiting_since(db, tq.schema)[0] is not None, what="worker announced")
    ids: list[int] = []
    lock = threading.Lock()

    def produce(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            if rng.random() < 0.2:
                made = tq.enqueue_many("record", [{"args": [n]} for n in range(rng.randint(2, 8))])
            else:
                made = [tq.enqueue("record", args=[seed])]
            with lock:
                ids.extend(made)
            time.sleep(rng.choice((0, 0, 0.005, 0.02, 0.08, 0.25)))

    producers = [threading.Thread(target=produce, args=(n,)) for n in range(3)]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join(60)
    wait_until(lambda: len(runs(db, tq.schema, "ran")) == len(ids), timeout=10,
               what=f"all {len(ids)} jobs run (a lost wake-up waits for the 30 s poll)")
    worst = db.execute(sql.SQL(
        "SELECT max(started_at - created_at) FROM {}.job_history WHERE id = ANY(%s)").format(
            sql.Identifier(tq.schema)), (ids,)).fetchone()[0]
    assert worst.total_seconds() < 3.0, f"a job waited {worst} to start"
