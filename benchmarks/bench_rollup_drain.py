"""Drain benchmark: how fast one worker acknowledges N no-op jobs.

It measures the acknowledgement path (claim, slot, completer's batched COMPLETE), which is
where the per-minute rollups are written, so a change to that statement shows up here.
Each run uses a fresh schema; the worker runs in-process in a thread; the clock runs from
the worker's start until every job is in ``job_history``.

    python benchmarks/bench_rollup_drain.py --jobs 20000 --runs 3 [--dsn DSN]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid

import psycopg

from pgtaskq import TaskQueue
from pgtaskq.worker import Worker


def drain_once(dsn: str, jobs: int, concurrency: int) -> float:
    """Jobs per second for one drain of ``jobs`` no-op jobs in a fresh schema."""
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
            thread.start()
            while True:
                done = conn.execute(
                    f'SELECT count(*) FROM "{schema}".job_history').fetchone()[0]
                if done >= jobs:
                    break
                time.sleep(0.02)
            elapsed = time.perf_counter() - began
        worker.stop()
        thread.join(30)
        return jobs / elapsed
    finally:
        tq.close()
        tq.uninstall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("PGTASKQ_TEST_DSN")
                        or "postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    options = parser.parse_args()
    rates = [drain_once(options.dsn, options.jobs, options.concurrency)
             for _ in range(options.runs)]
    print(f"drain {options.jobs} no-op jobs, concurrency {options.concurrency}: "
          + ", ".join(f"{r:,.0f}" for r in rates)
          + f" jobs/s (median {statistics.median(rates):,.0f})")


if __name__ == "__main__":
    main()
