"""The main loop's alarm clock: the LISTEN socket plus a self-pipe, under one ``select()``.

The main thread sleeps in ``select()`` on both: PostgreSQL notifications (new jobs, cancel
requests) make the socket readable; slot threads, signal handlers and the other worker
threads write a byte to the pipe. The caller's timeout is the poll fallback, so progress
never depends on a NOTIFY arriving: notifications are lost while the connection is down,
and that is fine.

The LISTEN connection is autocommit and never runs anything but LISTEN, so it never holds
a transaction open. When it breaks, ``wait()`` reports it, reconnects with backoff, and the
worker keeps polling meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pgtaskq import forking
from pgtaskq.backoff import Backoff
from pgtaskq.errors import first_line

log = logging.getLogger("pgtaskq.worker")

RECONNECT_BACKOFF_MAX = 10.0


@dataclass
class Events:
    """What woke the main loop."""

    queues: set[str] = field(default_factory=set)
    """Queues that got runnable jobs (from ``q:`` notifications)."""
    cancels: list[tuple[int, int]] = field(default_factory=list)
    """(job id, worker id) pairs of cancel requests (from ``c:`` notifications)."""
    reconnected: bool = False
    """The LISTEN connection was (re)established: notifications may have been missed."""


class Listener:
    """``wait(timeout)`` until a notification, a ``wake()`` or the timeout."""

    def __init__(self, conninfo: str | None, channel: str, *,
                 connect_kwargs: dict[str, Any] | None = None) -> None:
        self._conninfo = conninfo
        self._connect_kwargs = {"application_name": "pgtaskq listener", "connect_timeout": 5,
                                **(connect_kwargs or {})}
        self._channel = channel
        self._conn: psycopg.Connection | None = None
        self._backoff = Backoff(0.4, RECONNECT_BACKOFF_MAX)
        self._next_attempt = 0.0
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    @property
    def listening(self) -> bool:
        return self._conn is not None

    def wake(self) -> None:
        """Interrupt ``wait()`` from any thread (async-signal-safe: one ``write``)."""
        try:  # noqa: SIM105 - runs in signal handlers: keep it to one plain write
            os.write(self._write_fd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the main loop is awake already

    def connect(self) -> bool:
        """(Re)open the LISTEN connection if due; True when it is now listening."""
        if self._conninfo is None or self._conn is not None:
            return self._conn is not None
        if time.monotonic() < self._next_attempt:
            return False
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, **self._connect_kwargs)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except psycopg.Error as exc:
            delay = self._backoff.failed()
            self._next_attempt = time.monotonic() + delay
            log.warning("LISTEN failed (%s); polling, next try in %.1fs",
                        first_line(exc, self._conninfo), delay)
            return False
        if self._backoff.succeeded():
            log.info("LISTEN connection restored")
        self._conn = conn
        forking.track(conn)
        return True

    def seconds_to_reconnect(self) -> float | None:
        """When to try connecting again (None when listening or in poll-only mode)."""
        if self._conninfo is None or self._conn is not None:
            return None
        return max(0.0, self._next_attempt - time.monotonic())

    def wait(self, timeout: float) -> Events:
        """Block up to ``timeout`` seconds; return the notifications that arrived."""
        events = Events()
        if self._conn is None and self.connect():
            events.reconnected = True
        fds = [self._read_fd]
        if self._conn is not None:
            fds.append(self._conn.fileno())
        try:
            readable = _readable(fds, max(0.0, timeout))
        except OSError as exc:
            if exc.errno != errno.EINTR:
                raise
            readable = []
        if self._read_fd in readable:
            self._drain_pipe()
        if self._conn is not None:
            self._read_notifications(events)
        return events

    def _drain_pipe(self) -> None:
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def _read_notifications(self, events: Events) -> None:
        assert self._conn is not None
        try:
            for notify in self._conn.notifies(timeout=0):
                self._parse(notify.payload, events)
        except psycopg.Error as exc:
            log.warning("LISTEN connection lost (%s); polling until it is back",
                        first_line(exc))
            self._drop()

    @staticmethod
    def _parse(payload: str, events: Events) -> None:
        kind, _, rest = payload.partition(":")
        if kind == "q":
            events.queues.update(q for q in rest.split(",") if q)
        elif kind == "c":
            job_id, _, worker_id = rest.partition(":")
            try:
                events.cancels.append((int(job_id), int(worker_id)))
            except ValueError:
                log.warning("ignored malformed cancel notification %r", payload)

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None
        self._next_attempt = time.monotonic() + self._backoff.failed()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _readable(fds: list[int], timeout: float) -> list[int]:
    """The fds of ``fds`` that are readable (or hung up) within ``timeout`` seconds.

    ``poll()`` where there is one: ``select()`` raises ValueError for a descriptor of
    1024 or more, which a worker whose tasks (or host application) hold many files or
    sockets reaches, and the main loop died of it.
    """
    if hasattr(select, "poll"):
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN | select.POLLPRI)
        return [fd for fd, _ in poller.poll(timeout * 1000.0)]
    readable, _, _ = select.select(fds, [], [], timeout)  # pragma: no cover - Windows
    return readable
