"""The producer's fast paths: the pool's cheap liveness check and the bulk statement's shapes.

The pool no longer sends a round trip per borrow (pgtaskq.pool), so these tests show that a
connection killed while idle in the pool is still never handed to an enqueue, and that the
round trip is paid only when the socket says something happened or the connection is stale.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg

from pgtaskq.queue import TaskQueue
from pgtaskq.testing import wait_until


def _kill_idle_pool_connection(db: psycopg.Connection, tq: TaskQueue) -> None:
    """Terminate the backend of the pool's (only) idle connection and wait until it is gone.

    Only that pid is touched: other test runs may share the server.
    """
    with tq.connection() as conn:
        pid = conn.info.backend_pid
    assert db.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
    wait_until(
        lambda: not db.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone(),
        10,
        what="the terminated backend to exit",
    )


def test_borrowing_a_healthy_connection_costs_no_round_trip(tq: TaskQueue) -> None:
    tq.enqueue("t")
    before = tq._liveness.round_trips
    for n in range(20):
        tq.enqueue("t", args=[n])
    assert tq._liveness.round_trips == before


def test_a_connection_killed_in_the_pool_is_replaced_before_use(
    tq: TaskQueue, db: psycopg.Connection
) -> None:
    tq.enqueue("t")
    before = tq._liveness.round_trips
    _kill_idle_pool_connection(db, tq)
    job_id = tq.enqueue("t", args=["after the kill"])  # no OperationalError
    assert tq.get_job(job_id) is not None
    assert tq._liveness.round_trips > before  # the dead socket was noticed and checked


def test_a_stale_connection_is_checked_with_a_round_trip(tq: TaskQueue) -> None:
    tq.enqueue("t")
    tq._liveness.check_after_idle = 0.0
    before = tq._liveness.round_trips
    tq.enqueue("t")
    assert tq._liveness.round_trips == before + 1


def test_enqueue_many_mixes_defaults_and_overrides_in_input_order(
    tq: TaskQueue, db: psycopg.Connection
) -> None:
    @tq.task(queue="mail", priority=3, max_attempts=4)
    def send(*args: object, **kwargs: object) -> None: ...

    later = datetime.now(timezone.utc) + timedelta(hours=1)
    items = [
        {"args": [0]},
        {"args": [1], "queue": "bulk", "priority": 9},
        {"kwargs": {"k": 2}},
        {"args": (3,), "delay": 60, "max_attempts": 7},
        {"args": [4], "run_at": later},
        {},
    ]
    ids = tq.enqueue_many(send.name, items)
    assert ids == sorted(ids) and len(set(ids)) == 6
    rows = {
        row[0]: row[1:]
        for row in db.execute(
            f'SELECT id, queue, priority, max_attempts, args, kwargs, run_at > now() + '
            f"interval '30 seconds' FROM \"{tq.schema}\".jobs"
        )
    }
    assert [rows[i] for i in ids] == [
        ("mail", 3, 4, [0], {}, False),
        ("bulk", 9, 4, [1], {}, False),
        ("mail", 3, 4, [], {"k": 2}, False),
        ("mail", 3, 7, [3], {}, True),
        ("mail", 3, 4, [4], {}, True),
        ("mail", 3, 4, [], {}, False),
    ]


def test_enqueue_many_with_keys_and_without_returns_the_same_kind_of_ids(
    tq: TaskQueue,
) -> None:
    plain = tq.enqueue_many("t", [{"args": [n]} for n in range(5)])
    keyed = tq.enqueue_many("t", [{"args": [n], "dedupe_key": f"k{n}"} for n in range(5)])
    assert all(isinstance(i, int) for i in plain + keyed)
    assert plain == sorted(plain) and keyed == sorted(keyed) and plain[-1] < keyed[0]


def test_single_enqueue_survives_deallocate_all(tq: TaskQueue) -> None:
    """The pooled fast path prepares its statement once per connection; if something
    dropped it (DEALLOCATE ALL, as a pooler may), it prepares again instead of failing."""
    first = tq.enqueue("t", args=["é", 1.5], kwargs={"k": None})
    with tq.connection() as conn:
        conn.execute("DEALLOCATE ALL")
    second = tq.enqueue("t", args=["again"])
    assert second > first
    job = tq.get_job(first)
    assert job is not None and (job.args, job.kwargs) == (["é", 1.5], {"k": None})


def test_single_enqueue_on_a_missing_schema_says_install(pgtaskq_dsn: str) -> None:
    import pytest

    from pgtaskq.errors import SchemaNotInstalledError

    bare = TaskQueue(pgtaskq_dsn, schema="pgtaskq_never_installed")
    try:
        hint = "pgtaskq --schema pgtaskq_never_installed install"
        with pytest.raises(SchemaNotInstalledError, match=hint):
            bare.enqueue("t")
    finally:
        bare.close()


def test_threads_enqueue_concurrently_through_the_pool(
    tq: TaskQueue, db: psycopg.Connection
) -> None:
    """Web servers enqueue from many threads: each borrow gets its own connection, the
    statement is prepared once per connection, and every job is written exactly once."""
    import threading

    ids: list[int] = []
    lock = threading.Lock()

    def produce(worker: int) -> None:
        for n in range(50):
            job_id = tq.enqueue("t", args=[worker, n])
            with lock:
                ids.append(job_id)

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == len(set(ids)) == 400
    rows = db.execute(f'SELECT count(*), count(DISTINCT args) FROM "{tq.schema}".jobs')
    assert rows.fetchone() == (400, 400)


def test_a_nul_in_a_task_name_is_refused_not_truncated(tq: TaskQueue) -> None:
    import pytest

    with pytest.raises(ValueError, match="NUL"):
        tq.enqueue("t\x00rest")
