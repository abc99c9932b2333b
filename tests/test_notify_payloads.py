"""Wake-up NOTIFY payloads stay under PostgreSQL's 8000-byte limit however many queues a
statement touches (``pgtaskq.sql.fragments.notify_queues``).
"""

from __future__ import annotations

import psycopg
import pytest
from worker_helpers import (
    FAKE_WORKER,
    claim,
)

from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql

APP = "apps.basic:tq"


# -- NOTIFY payloads stay under PostgreSQL's 8000-byte limit ----------------------------------

MANY_QUEUES = [f"tenant-{n:06d}-background" for n in range(600)]  # 25 bytes each
"""Per-tenant queues: one statement's distinct queues joined with ',' exceed 8000 bytes."""


def _notified_queues(listen_conn):
    queues: set[str] = set()
    for notify in listen_conn.notifies(timeout=0.5):
        kind, _, rest = notify.payload.partition(":")
        assert kind == "q" and len(notify.payload) < 8000
        queues.update(rest.split(","))
    return queues


@pytest.fixture
def listen_conn(tq, pgtaskq_dsn):
    """Listens as a worker of an earlier release would: enqueues wake it every time
    (registered without ``announces_waiting``; schema version 9 notifies only waiters)."""
    with psycopg.connect(pgtaskq_dsn, autocommit=True) as conn:
        conn.execute(f'INSERT INTO "{tq.schema}".workers (host, pid, concurrency, '
                     "pgtaskq_version) VALUES ('old-release', 1, 1, '0.earlier')")
        conn.execute(f'LISTEN "{tq.channel}"')
        yield conn


def test_rescue_of_jobs_in_many_queues(tq, db, listen_conn):
    """RESCUE woke workers with ONE pg_notify listing every distinct queue of its batch
    (up to 1,000 jobs); past 8000 bytes pg_notify raises "payload string too long", the
    whole statement fails, and it fails again on every pass: expired jobs stayed
    'running' for ever."""
    tq.enqueue_many("some.task", [{"queue": q} for q in MANY_QUEUES])
    db.execute(f'UPDATE "{tq.schema}".jobs SET status = %s, worker_id = %s, attempts = 1, '
               "lease_expires_at = now() - interval '1 minute'", ("running", FAKE_WORKER))
    _notified_queues(listen_conn)  # drop the enqueue's notifications
    rows = db.execute(render(tq.schema, worker_sql.RESCUE),
                      {"limit": 1000, "channel": tq.channel}).fetchall()
    assert len(rows) == len(MANY_QUEUES)
    assert db.execute(f'SELECT count(*) FROM "{tq.schema}".jobs WHERE status = %s',
                      ("queued",)).fetchone()[0] == len(MANY_QUEUES)
    assert _notified_queues(listen_conn) == set(MANY_QUEUES)


def test_enqueue_many_into_many_queues(tq, listen_conn):
    """ENQUEUE_MANY: the same single NOTIFY made a bulk enqueue across a few hundred
    queues fail outright."""
    ids = tq.enqueue_many("some.task", [{"queue": q} for q in MANY_QUEUES])
    assert len(ids) == len(MANY_QUEUES)
    assert _notified_queues(listen_conn) == set(MANY_QUEUES)


def test_enqueue_many_with_dedupe_keys_into_many_queues(tq, listen_conn):
    ids = tq.enqueue_many("some.task", [{"queue": q, "dedupe_key": q} for q in MANY_QUEUES])
    assert len(set(ids)) == len(MANY_QUEUES)
    assert _notified_queues(listen_conn) == set(MANY_QUEUES)


def test_hand_back_of_jobs_in_many_queues(tq, db, listen_conn):
    """HAND_BACK: same payload; its failure left the jobs running until lease expiry."""
    tq.enqueue_many("some.task", [{"queue": q} for q in MANY_QUEUES])
    rows = claim(db, tq, ["some.task"], limit=len(MANY_QUEUES))
    _notified_queues(listen_conn)
    db.execute(render(tq.schema, worker_sql.HAND_BACK), {
        "worker_id": FAKE_WORKER, "ids": [r[0] for r in rows],
        "attempts": [r[6] for r in rows], "delay": 0.0, "channel": tq.channel,
    })
    assert db.execute(f'SELECT count(*) FROM "{tq.schema}".jobs WHERE status = %s',
                      ("queued",)).fetchone()[0] == len(MANY_QUEUES)
    assert _notified_queues(listen_conn) == set(MANY_QUEUES)
