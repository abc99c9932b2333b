"""The TaskQueue's own connection pool, with a liveness check that costs no round trip.

psycopg_pool's ``check=ConnectionPool.check_connection`` sends an empty query every time a
connection is borrowed. For ``enqueue()`` that doubles the round trips: on the 2-core
benchmark machine it cost about 0.13 ms of a 0.6 ms enqueue (benchmarks/RESULTS.md).

What kills a pooled connection in practice leaves a trace on its socket before we use it:
``pg_terminate_backend``, a server shutdown or restart, ``idle_session_timeout`` and a
crashed backend all send an error message and/or close the socket, which makes it readable
while the connection should be silent (idle, autocommit, nobody LISTENs on it). So a borrow
polls the socket with a zero timeout (one system call) and pays for the real round-trip
check only when something is waiting there, or when the connection sat unused for longer
than ``check_after_idle`` seconds (a NAT or firewall may have dropped it without a word).
A connection that fails the check is discarded by the pool and another one is handed out,
so the caller never sees the dead one, and the enqueue itself is never retried: a retry
after sending could insert the job twice.
"""

from __future__ import annotations

import select
import weakref
from collections.abc import Callable
from time import monotonic
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from pgtaskq import forking

CHECK_AFTER_IDLE = 30.0
"""Seconds a pooled connection may sit unused before a borrow checks it with a round trip."""


class LivenessCheck:
    """``check``/``configure`` callbacks for a ``ConnectionPool``.

    The time of use is stamped when a connection is made and each time it is borrowed (not
    when it is returned: a ``reset`` callback makes psycopg_pool hand every return to a
    worker thread, a thread switch per enqueue). A connection held for long before its
    return therefore looks stale at its next borrow and gets the full check: the safe side.
    """

    def __init__(self, check_after_idle: float = CHECK_AFTER_IDLE) -> None:
        self.check_after_idle = check_after_idle
        self._last_used: weakref.WeakKeyDictionary[psycopg.Connection, float] = (
            weakref.WeakKeyDictionary()
        )
        self.round_trips = 0
        """How many borrows paid for a real check (tests and benchmarks read it)."""

    def mark_used(self, conn: psycopg.Connection) -> None:
        self._last_used[conn] = monotonic()

    def check(self, conn: psycopg.Connection) -> None:
        """Raise if ``conn`` is dead; a round trip only when it looks suspicious or stale."""
        now = monotonic()
        last_used = self._last_used.get(conn)
        self._last_used[conn] = now
        if last_used is None or now - last_used > self.check_after_idle or _input_pending(conn):
            self.round_trips += 1
            ConnectionPool.check_connection(conn)


def _input_pending(conn: psycopg.Connection) -> bool:
    """Whether the server sent something (an error, EOF) to a connection that is idle."""
    if conn.closed:
        return True
    try:
        fd = conn.fileno()
    except psycopg.Error:
        return True
    if hasattr(select, "poll"):  # not limited to fds < 1024 like select()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)  # pragma: no cover - Windows
    return bool(readable)


def behind_pooler(conn: psycopg.Connection) -> bool:
    """Whether a pooler such as PgBouncer sits between this connection and PostgreSQL.

    A pooler answers the client's startup itself, with a BackendKeyData of its own (it
    routes cancel requests by it), so the process id libpq got at connect is not that of
    the server process running our statements. Behind one in transaction mode, statements
    of one client land on different server sessions: psycopg's automatic prepared
    statements (``_pg3_N``) then collide with another client's, or are missing.
    """
    row = conn.execute("SELECT pg_catalog.pg_backend_pid()", prepare=False).fetchone()
    return row is not None and row[0] != conn.info.backend_pid


def _configure(liveness: LivenessCheck, conn: psycopg.Connection,
               on_pooler: Callable[[], None] | None) -> None:
    liveness.mark_used(conn)
    forking.track(conn)  # a task's forked child gets /dev/null in place of this socket
    if conn.prepare_threshold is not None and behind_pooler(conn):
        # one round trip per new connection, so no one need remember PGTASKQ_PREPARE=0
        conn.prepare_threshold = None
        if on_pooler is not None:
            on_pooler()


def open_pool(
    conninfo: str, *, min_size: int, max_size: int, name: str, liveness: LivenessCheck,
    timeout: float = 30.0, on_pooler: Callable[[], None] | None = None, **kwargs: Any,
) -> ConnectionPool:
    """An open pool of autocommit connections guarded by ``liveness``; ``kwargs`` go to
    ``psycopg.connect``; ``timeout`` is how long a borrow waits by default. A connection
    made through a pooler (``behind_pooler``) never prepares statements, and ``on_pooler``
    is called."""
    return ConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        kwargs={"autocommit": True, **kwargs},
        configure=lambda conn: _configure(liveness, conn, on_pooler),
        check=liveness.check,
        name=name,
        open=True,
    )
