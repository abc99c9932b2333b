"""pgtaskq side of the benchmarks: ``pgtaskq worker benchmarks.apps.pgtaskq_app:tq``.

The DSN and schema come from ``$PGTASKQ_DSN`` / ``$PGTASKQ_SCHEMA``, as for any deployment.
The extra fields (job id, attempt, pid) let the chaos soak tell a job that ran twice
(same job id) from a producer that enqueued twice (two ids for one ``n``), and a rerun
caused by a killed worker (the first run's pid was killed) from one that should not happen.
"""

from __future__ import annotations

import os

from benchmarks import body
from pgtaskq import TaskQueue, current_job

tq = TaskQueue()

_PID = os.getpid()


@tq.task(name="bench.record")
def record(n: int) -> None:
    job = current_job()
    body.record(n, f"{job.id} {job.attempt} {_PID}")
