"""Drain benchmark: what the per-minute rollups cost a worker draining N no-op jobs.

It drives the whole acknowledgement path (claim, slot, completer's batched COMPLETE, where
the rollups are written), alternating runs with the rollups as shipped and with them cut
out (the ``rolled_up`` CTE removed, no pre-aggregation), each in a fresh schema. The
worker runs in-process in a thread; the clock runs from its start until every job is in
``job_history``. Reports jobs/s and the worker process's CPU time per job (less disturbed
than wall time by other load on a shared machine).

    python -m benchmarks.bench_rollup_drain --jobs 20000 --runs 3 [--dsn DSN]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid

import psycopg

from benchmarks import common
from pgtaskq import TaskQueue
from pgtaskq.sql import worker as worker_sql
from pgtaskq.worker import Worker, rollup

SHIPPED = (worker_sql.COMPLETE, rollup.params)


def use_rollups(enabled: bool) -> None:
    """Swap the completer's statement and parameters (looked up at each flush)."""
    if enabled:
        worker_sql.COMPLETE, rollup.params = SHIPPED
        return
    zeros = lambda batch: "{" + ",".join("0" * len(batch)) + "}"  # noqa: E731
    worker_sql.COMPLETE = common.without_rollup(SHIPPED[0])
    rollup.params = lambda batch: {"wait_buckets": zeros(batch),  # type: ignore[assignment]
                                   "run_buckets": zeros(batch)}


def drain_once(dsn: str, jobs: int, concurrency: int) -> tuple[float, float]:
    """(jobs per second, worker CPU µs per job) for one drain in a fresh schema."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    tq = TaskQueue(dsn, schema=schema)

    @tq.task(name="noop")
    def noop() -> None:
        return None

    tq.install()
    try:
        for start in range(0, jobs, 5000):
            tq.enqueue_many("noop", [{}] * min(5000, jobs - start))
        worker = Worker(tq, concurrency=concurrency, install_signal_handlers=False,
                        poll_interval=0.5)
        thread = threading.Thread(target=worker.run, daemon=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'VACUUM ANALYZE "{schema}".jobs')
            began = time.perf_counter()
            cpu_before = time.process_time()
            thread.start()
            while True:
                done = conn.execute(
                    f'SELECT count(*) FROM "{schema}".job_history').fetchone()[0]
                if done >= jobs:
                    break
                time.sleep(0.02)
            elapsed = time.perf_counter() - began
            cpu = time.process_time() - cpu_before
        worker.stop()
        thread.join(30)
        return jobs / elapsed, cpu / jobs * 1e6
    finally:
        tq.close()
        tq.uninstall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("PGTASKQ_BENCH_DSN")
                        or os.environ.get("PGTASKQ_TEST_DSN")
                        or "postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    options = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"with rollups": [],
                                                     "without rollups": []}
    for _ in range(options.runs):
        for name in results:
            use_rollups(name == "with rollups")
            results[name].append(drain_once(options.dsn, options.jobs, options.concurrency))
    use_rollups(True)
    for name, runs in results.items():
        rates = [r for r, _ in runs]
        cpus = [c for _, c in runs]
        print(f"{name:>16}: drain {options.jobs} no-op jobs, concurrency "
              f"{options.concurrency}: " + ", ".join(f"{r:,.0f}" for r in rates)
              + f" jobs/s (median {statistics.median(rates):,.0f}); worker CPU "
              f"{statistics.median(cpus):.0f} µs/job (min {min(cpus):.0f})")


if __name__ == "__main__":
    main()
