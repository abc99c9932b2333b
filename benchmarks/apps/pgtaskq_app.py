"""pgtaskq side of the benchmarks: ``pgtaskq worker benchmarks.apps.pgtaskq_app:tq``.

The DSN and schema come from ``$PGTASKQ_DSN`` / ``$PGTASKQ_SCHEMA``, as for any deployment.
The extra fields (job id, attempt, pid) let the chaos soak tell a job that ran twice
(same job id) from a producer that enqueued twice (two ids for one ``n``), and a rerun
caused by a killed worker (the first run's pid was killed) from one that should not happen.
"""

from __future__ import annotations

import os
import time

from benchmarks import body
from pgtaskq import TaskQueue, current_job

tq = TaskQueue()

_PID = os.getpid()


@tq.task(name="bench.record")
def record(n: int) -> None:
    job = current_job()
    body.record(n, f"{job.id} {job.attempt} {_PID}")


# -- the pool scenario (bench_pool.py) ----------------------------------------------------

SPIN_LOOPS = int(os.environ.get("PGTASKQ_BENCH_SPIN_LOOPS", "120000"))
"""Pure-Python iterations of ``bench.spin``: ~20 ms on an idle core of the machine the
figures in RESULTS.md come from (the harness calibrates it and passes it down)."""

_leaked: list[bytes] = []


@tq.task(name="bench.spin")
def spin(n: int) -> None:
    """CPU-bound: a fixed amount of pure-Python work (the GIL held throughout)."""
    body.record(n)
    x = 0
    for i in range(SPIN_LOOPS):
        x += i * i


@tq.task(name="bench.hang", timeout=1, max_attempts=1)
def hang(n: int) -> None:
    """Past its timeout for good: only the process pool can stop it."""
    body.record(n)
    time.sleep(600)


@tq.task(name="bench.leak")
def leak(n: int) -> None:
    """Leaks 10 KiB per job, as a cache that is never pruned would."""
    body.record(n)
    _leaked.append(bytes(10 * 1024))
