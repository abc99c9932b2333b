"""Cost of the per-minute rollup inside the batched acknowledgement (COMPLETE).

The drain benchmark is noisy on a shared machine; this one times only the statement the
completer runs: N running jobs acknowledged in batches, once with the real COMPLETE and
once with its ``rolled_up`` CTE cut out, alternating, best of several rounds. Besides
wall-clock time it reports CPU time, which other load on the machine disturbs far less:
the server backend's (read from /proc when the server is local) and this process's
(building the parameters, as the completer does).

    python -m benchmarks.bench_ack --jobs 20000 --batch 100 --rounds 5 [--dsn DSN]
"""

from __future__ import annotations

import argparse
import os
import random
import time
import uuid

import psycopg

from benchmarks import common
from pgtaskq import TaskQueue
from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql
from pgtaskq.worker import rollup
from pgtaskq.worker.outcome import Outcome


def fill(conn: psycopg.Connection, schema: str, jobs: int) -> None:
    conn.execute(f'TRUNCATE "{schema}".jobs, "{schema}".job_history, "{schema}".stats_minute')
    conn.execute(
        f"""INSERT INTO "{schema}".jobs (queue, task, status, attempts, max_attempts,
                                          worker_id, started_at)
            SELECT 'default', 'task' || (g %% 3), 'running', 1, 3, 1, now()
            FROM generate_series(1, %s) g""", (jobs,))
    conn.execute(f'VACUUM ANALYZE "{schema}".jobs')


def backend_cpu(pid: int) -> float | None:
    """CPU seconds used so far by a local server backend (None if not readable)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ack_all(conn: psycopg.Connection, schema: str, statement: str,
            batch: int) -> tuple[float, float, float | None]:
    """(wall, client CPU, server CPU) seconds to acknowledge every running job."""
    jobs = conn.execute(f'SELECT id, task FROM "{schema}".jobs ORDER BY id').fetchall()
    rng = random.Random(7)
    outcomes = [Outcome(job_id, 1, "failed" if rng.random() < 0.05 else "succeeded",
                        queue="default", task=task, wait_ms=rng.expovariate(1 / 50),
                        run_ms=rng.expovariate(1 / 5), max_attempts=3)
                for job_id, task in jobs]
    server_before = backend_cpu(conn.info.backend_pid)
    client_before = time.process_time()
    began = time.perf_counter()
    for start in range(0, len(outcomes), batch):
        chunk = outcomes[start:start + batch]
        n = len(chunk)
        # built per batch, as Completer._write does, so Python's share is timed too
        extra = rollup.params(chunk) if "rolled_up" in statement else {
            "wait_buckets": [0] * n, "run_buckets": [0] * n}
        conn.execute(render(schema, statement), {
            "worker_id": 1, "ids": [o.job_id for o in chunk], "attempts": [1] * n,
            "kinds": [o.kind for o in chunk], "errors": [None] * n, "results": [None] * n,
            "delays": [None] * n, **extra, "backoff_base": 1.0, "backoff_cap": 10.0,
        })
    wall = time.perf_counter() - began
    client = time.process_time() - client_before
    server_after = backend_cpu(conn.info.backend_pid)
    server = None if server_before is None or server_after is None \
        else server_after - server_before
    return wall, client, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("PGTASKQ_BENCH_DSN")
                        or os.environ.get("PGTASKQ_TEST_DSN")
                        or "postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    tq = TaskQueue(options.dsn, schema=schema)
    tq.install()
    variants = {"with rollup": worker_sql.COMPLETE,
                "without rollup": common.without_rollup(worker_sql.COMPLETE)}
    best: dict[str, list[float]] = {name: [float("inf")] * 3 for name in variants}
    try:
        with psycopg.connect(options.dsn, autocommit=True) as conn:
            for _ in range(options.rounds):
                for name, statement in variants.items():
                    fill(conn, schema, options.jobs)
                    measured = ack_all(conn, schema, statement, options.batch)
                    best[name] = [min(b, m if m is not None else float("nan"))
                                  for b, m in zip(best[name], measured, strict=True)]
                    counted = conn.execute(
                        f'SELECT coalesce(sum(succeeded + failed + retried), 0) FROM "{schema}".'
                        "stats_minute").fetchone()[0]
                    assert counted == (options.jobs if statement is worker_sql.COMPLETE
                                       else 0), counted
    finally:
        tq.close()
        tq.uninstall()
    batches = options.jobs / options.batch
    for name, (wall, client, server) in best.items():
        print(f"{name:>15}: {options.jobs / wall:9,.0f} acks/s wall "
              f"({wall / batches * 1000:.2f} ms per batch of {options.batch}); CPU per "
              f"batch: server {server / batches * 1000:.2f} ms, client "
              f"{client / batches * 1000:.2f} ms")
    (w1, c1, s1), (w0, c0, s0) = best["with rollup"], best["without rollup"]
    print(f"rollup cost per batch of {options.batch}: wall {(w1 - w0) / batches * 1000:+.2f} ms "
          f"({w1 / w0 - 1:+.1%}), server CPU {(s1 - s0) / batches * 1000:+.2f} ms "
          f"({s1 / s0 - 1:+.1%}), client CPU {(c1 - c0) / batches * 1000:+.2f} ms")


if __name__ == "__main__":
    main()
