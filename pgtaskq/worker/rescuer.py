"""The rescuer: any worker periodically brings back jobs whose lease expired.

A lease expires only when its worker stopped heartbeating (crashed, was SIGKILLed, lost
its network for longer than the lease). Every live worker runs the rescuer; ``SKIP LOCKED``
lets them share the work without coordination. It also forgets registry rows of workers
gone for a day, so the workers table does not grow with every deploy, and closes the wake
gate that a worker which crashed while waiting left open (``close_wake_gate()``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pgtaskq.sql import worker as worker_sql
from pgtaskq.worker.background import PeriodicThread
from pgtaskq.worker.database import Statements

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

log = logging.getLogger("pgtaskq.worker")

BATCH = 1000
FORGET_WORKERS_AFTER = 24 * 3600.0


class Rescuer(PeriodicThread):
    name = "rescuer"

    def __init__(self, pool: ConnectionPool, schema: str, channel: str, *,
                 interval: float) -> None:
        super().__init__(interval)
        self._db = Statements(pool, schema)
        self._channel = channel

    def run_once(self) -> None:
        while not self.stopping:
            rows = self._db.fetchall(worker_sql.RESCUE,
                                     {"limit": BATCH, "channel": self._channel})
            requeued = [row.id for row in rows if row.kind == "requeued"]
            failed = [row.id for row in rows if row.kind == "archived"]
            if requeued:
                log.warning("rescued %d jobs with expired leases: %s", len(requeued),
                            _ids(requeued))
            if failed:
                log.warning("%d jobs with expired leases had no attempts left (failed or "
                            "cancelled): %s", len(failed), _ids(failed))
            if len(rows) < BATCH:
                break
        self._db.execute(worker_sql.FORGET_OLD_WORKERS, {"older_than": FORGET_WORKERS_AFTER})
        self._db.execute(worker_sql.CLOSE_WAKE_GATE)


def _ids(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:10]))
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
