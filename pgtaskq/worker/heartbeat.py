"""The heartbeat: extends the lease of every job this worker holds, in one statement.

It runs in its own thread so a busy or stuck slot can never starve it (heartbeats starved
by busy handlers make other queues run jobs twice). Each beat also refreshes the worker's
registry row (busy and stuck slots), passes cancel requests on to the jobs' contexts, and
notices leases lost to the rescuer (after an outage longer than the lease): those jobs'
acknowledgements will be ignored, and the log says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pgtaskq.sql import worker as worker_sql
from pgtaskq.worker.background import PeriodicThread
from pgtaskq.worker.cancels import request_cancel
from pgtaskq.worker.database import Statements

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgtaskq.worker.held import HeldJobs

log = logging.getLogger("pgtaskq.worker")


class Heartbeat(PeriodicThread):
    name = "heartbeat"

    def __init__(
        self,
        pool: ConnectionPool,
        schema: str,
        worker_id: int,
        held: HeldJobs,
        *,
        interval: float,
        lease: float,
        busy_slots: Callable[[], int],
    ) -> None:
        super().__init__(interval)
        self._db = Statements(pool, schema)
        self._worker_id = worker_id
        self._held = held
        self._lease = lease
        self._busy_slots = busy_slots

    def run_once(self) -> None:
        jobs = sorted(self._held.snapshot(), key=lambda job: job.id)  # lock order
        stuck = sum(1 for job in jobs if job.context.timed_out and not job.finished)
        params = {
            "worker_id": self._worker_id,
            "ids": [job.id for job in jobs],
            "attempts": [job.attempt for job in jobs],
            "lease": self._lease,
            "busy_slots": self._busy_slots(),
            "stuck_slots": stuck,
        }
        rows = self._db.fetchall(worker_sql.HEARTBEAT, params)
        still_ours = {row.id: row.cancel_requested for row in rows}
        missing = [job for job in jobs if job.id not in still_ours]
        if missing:
            # under the completer's lock: a row missing because its outcome was written
            # meanwhile is released from the held jobs before we look (HeldJobs.settling)
            with self._held.settling:
                lost = [job for job in missing
                        if self._held.get(job.id) is job and not job.lease_lost]
            for job in lost:
                job.lease_lost = True
                log.warning("job %d (%s) lost its lease (attempt %d); another worker "
                            "may run it, this run's outcome will be ignored",
                            job.id, job.task, job.attempt)
        for job in jobs:
            if job.id not in still_ours:
                continue
            if still_ours[job.id]:
                request_cancel(job)
