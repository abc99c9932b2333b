"""Cancel requests reaching the jobs this worker holds: one place applies them.

Three doors lead here: a NOTIFY naming a held job (only a hint: anyone may NOTIFY, so it
is looked up in the table first, rate-limited by ``pgtaskq.worker.hints``), the poll, and
the heartbeat, whose UPDATE returns ``cancel_requested`` with each lease it extends. Each
confirmed request goes through ``request_cancel``: one log line, one event set.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pgtaskq.sql import worker as worker_sql
from pgtaskq.worker.database import Statements

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgtaskq.worker.held import HeldJob, HeldJobs
    from pgtaskq.worker.hints import NotificationHints
    from pgtaskq.worker.listener import Events

log = logging.getLogger("pgtaskq.worker")


def request_cancel(job: HeldJob) -> None:
    """The database says ``job`` has ``cancel_requested``: tell its context (once)."""
    if not job.context.cancel_requested:
        log.info("job %d (%s): cancel requested", job.id, job.task)
        job.context.request_cancel()


class Cancels:
    """Cancel notifications and the poll, checked against the table (main thread)."""

    def __init__(self, pool: ConnectionPool, schema: str, worker_id: int, held: HeldJobs,
                 hints: NotificationHints) -> None:
        self._db = Statements(pool, schema)
        self._worker_id = worker_id
        self._held = held
        self._hints = hints

    def notified(self, events: Events) -> None:
        """Cancel notifications only name jobs to look up: anyone may NOTIFY (hints.py)."""
        hinted = set()
        for job_id, worker_id in events.cancels:
            job = self._held.get(job_id) if worker_id == self._worker_id else None
            if job is not None and not job.finished and not job.context.cancel_requested:
                hinted.add(job_id)
        if hinted:
            self._hints.hint_cancel(hinted)
        due = self._hints.cancels_to_check(time.monotonic())
        if due:
            self.poll(due)

    def poll(self, only: set[int] | None = None) -> None:
        """Ask the database which held jobs really have ``cancel_requested``; cancel those."""
        running = [job for job in self._held if not job.finished
                   and (only is None or job.id in only)]
        if not running:
            return
        try:
            rows = self._db.fetchall(worker_sql.CANCEL_REQUESTED, {
                "ids": [job.id for job in running], "worker_id": self._worker_id})
        except Exception as exc:
            log.debug("cancel poll failed: %s", exc)
            return
        for row in rows:
            job = self._held.get(row.id)
            if job is not None:
                request_cancel(job)
