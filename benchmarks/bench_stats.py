"""How long ``pgtaskq stats`` (and ``check``) take with a million jobs in the table.

Fills a fresh schema by SQL (``generate_series``): ``--jobs`` live jobs over 4 queues and
20 tasks (90% ready, 9% scheduled, 1000 running), 100k finished jobs with 2% failures, an
hour of rollups from 4 workers, and 4 registered workers. Then times, in this process,
``stats.collect`` (what every ``--watch`` frame costs), ``health.check`` and one
``pgtaskq metrics`` scrape (reads and Prometheus text), first right
after the bulk load (no VACUUM or ANALYZE yet: the worst case for plans and index-only
scans) and again after ``VACUUM ANALYZE``; and the whole ``pgtaskq stats`` command in a
subprocess (Python start-up and imports included). With ``--explain`` (or when a read
exceeds 200 ms) it prints EXPLAIN ANALYZE of every statement.

    python -m benchmarks.bench_stats [--jobs 1000000] [--runs 20] [--explain] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import psycopg

from benchmarks import common
from pgtaskq import TaskQueue, defaults
from pgtaskq.operations import health, stats
from pgtaskq.sql import render
from pgtaskq.sql import stats as stats_sql

BUDGET_MS = 200.0


def time_reads(conn: psycopg.Connection, schema: str, runs: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"stats": [], "stats --task": [], "check": [],
                                       "metrics scrape": []}
    scrape = metrics_scrape(conn, schema)
    for _ in range(runs):
        began = time.perf_counter()
        snapshot = stats.collect(conn, schema)
        timings["stats"].append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        stats.collect(conn, schema, task="app.tasks.task_3")
        timings["stats --task"].append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        health.check(conn, schema, max_age=3600)
        timings["check"].append((time.perf_counter() - began) * 1000)
        if scrape is not None:
            began = time.perf_counter()
            scrape()
            timings["metrics scrape"].append((time.perf_counter() - began) * 1000)
    print(f"    ready {snapshot.total.ready:,} ({'estimated' if snapshot.estimated else 'exact'})"
          f", scheduled {snapshot.total.scheduled:,}, running {snapshot.total.running:,}, "
          f"oldest ready {snapshot.total.oldest_ready_age:.0f}s")
    return timings


def metrics_scrape(conn: psycopg.Connection, schema: str) -> Any:
    """One ``pgtaskq metrics`` scrape: the collector's reads plus the text exposition
    (None without prometheus-client)."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError:
        return None
    from pgtaskq.operations.metrics import PgtaskqCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PgtaskqCollector(lambda: conn, schema))
    return lambda: generate_latest(registry)


def report(label: str, timings: dict[str, list[float]]) -> float:
    print(f"  {label}")
    worst = 0.0
    for name, values in timings.items():
        if not values:
            continue
        values = sorted(values)
        p95 = values[max(0, int(len(values) * 0.95) - 1)]
        worst = max(worst, statistics.median(values))
        print(f"    {name:<14} median {statistics.median(values):6.1f} ms   "
              f"p95 {p95:6.1f} ms   max {values[-1]:6.1f} ms")
    return worst


def explain(conn: psycopg.Connection, schema: str) -> None:
    now, minute, pages, _reltuples, _relpages = conn.execute(
        render(schema, stats_sql.CLOCK), {"jobs": f'"{schema}".jobs'}).fetchone()
    params: dict[str, Any] = {"now": now, "minute": minute, "queue": None, "task": None,
                              "limit": 10, "percent": 100.0 * stats.SAMPLE_PAGES / pages,
                              "lost_beats": defaults.WORKER_LOST_AFTER_BEATS,
                              "lost_min": defaults.WORKER_LOST_AFTER_MIN, "schema": schema}
    for name in ("LIVE_SAMPLE", "RUNNING", "OLDEST_READY_BY_QUEUE", "ROLLUP_COUNTS",
                 "ROLLUP_HISTOGRAMS", "ROLLUP_SERIES", "ROLLUP_BY_WORKER", "WORKERS",
                 "RECENT_FAILURES", "TABLE_HEALTH", "OLDEST_XACT"):
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + render(
            schema, getattr(stats_sql, name)), params).fetchall()
        print(f"\n-- {name}")
        print("\n".join(r[0] for r in rows))


def cli_in_process(dsn: str, schema: str, runs: int) -> list[float]:
    from click.testing import CliRunner

    from pgtaskq.cli import cli

    times = []
    for _ in range(runs):
        began = time.perf_counter()
        result = CliRunner().invoke(cli, ["--dsn", dsn, "--schema", schema, "stats"])
        times.append((time.perf_counter() - began) * 1000)
        assert result.exit_code == 0, result.output
    return times


def cli_wall(dsn: str, schema: str, runs: int) -> list[float]:
    env = {**os.environ, "PGTASKQ_DSN": dsn, "PGTASKQ_SCHEMA": schema}
    walls = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pgtaskq", "stats"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        walls.append((time.perf_counter() - began) * 1000)
    return walls


def many_workers(dsn: str, runs: int, tasks: int = 50, workers: int = 20) -> None:
    """``stats`` over rollups of many tasks and workers: the last 3 minutes still one row
    per worker (as the completers write them), the 2 hours before folded by the pruner."""
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    tq = TaskQueue(dsn, schema=schema)
    tq.install()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"""
                INSERT INTO "{schema}".stats_minute (minute, queue, task, worker_id,
                    succeeded, wait_ms_histogram, run_ms_histogram)
                SELECT date_trunc('minute', now()) - make_interval(mins => m),
                       'q' || (t %% 4), 't' || t, w, 100, array_fill(3, ARRAY[64]),
                       array_fill(5, ARRAY[64])
                FROM generate_series(0, 2) m, generate_series(1, %(tasks)s) t,
                     generate_series(1, %(workers)s) w
                UNION ALL
                SELECT date_trunc('minute', now()) - make_interval(mins => m),
                       'q' || (t %% 4), 't' || t, 0, 2000, array_fill(60, ARRAY[64]),
                       array_fill(100, ARRAY[64])
                FROM generate_series(3, 120) m, generate_series(1, %(tasks)s) t""",
                         {"tasks": tasks, "workers": workers})
            conn.execute(f'VACUUM ANALYZE "{schema}".stats_minute')
            timings = []
            for _ in range(runs):
                began = time.perf_counter()
                stats.collect(conn, schema)
                timings.append((time.perf_counter() - began) * 1000)
        print(f"  rollups of {tasks} tasks x {workers} workers: stats median "
              f"{statistics.median(timings):.1f} ms, max {max(timings):.1f} ms")
    finally:
        tq.close()
        tq.uninstall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("PGTASKQ_BENCH_DSN")
                        or os.environ.get("PGTASKQ_TEST_DSN")
                        or "postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--explain", action="store_true")
    options = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    tq = TaskQueue(options.dsn, schema=schema)
    tq.install()
    try:
        with psycopg.connect(options.dsn, autocommit=True) as conn:
            began = time.perf_counter()
            common.fill_stats_tables(conn, schema, options.jobs)
            size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size(%s))",
                                (f'"{schema}".jobs',)).fetchone()[0]
            print(f"filled {options.jobs:,} live jobs ({size} with indexes), 100,000 "
                  f"finished, 2h of rollups in {time.perf_counter() - began:.1f}s")
            worst = report("right after the bulk load (no VACUUM/ANALYZE yet):",
                           time_reads(conn, schema, options.runs))
            conn.execute(f'VACUUM ANALYZE "{schema}".jobs')
            conn.execute(f'VACUUM ANALYZE "{schema}".job_history')
            conn.execute(f'VACUUM ANALYZE "{schema}".stats_minute')
            worst = max(worst, report("after VACUUM ANALYZE:",
                                      time_reads(conn, schema, options.runs)))
            in_process = cli_in_process(options.dsn, schema, options.runs)
            print(f"  `pgtaskq stats` in-process (CliRunner: schema check, connect, read, "
                  f"render): median {statistics.median(in_process):.0f} ms, max "
                  f"{max(in_process):.0f} ms")
            walls = cli_wall(options.dsn, schema, max(3, options.runs // 4))
            print(f"  `pgtaskq stats` command, wall clock incl. Python start-up: median "
                  f"{statistics.median(walls):.0f} ms (min {min(walls):.0f} ms)")
            began = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import pgtaskq.cli"], check=True)
            print(f"  of which `python -c 'import pgtaskq.cli'` alone: "
                  f"{(time.perf_counter() - began) * 1000:.0f} ms")
            if options.explain or worst > BUDGET_MS:
                explain(conn, schema)
    finally:
        tq.close()
        tq.uninstall()
    many_workers(options.dsn, options.runs)


if __name__ == "__main__":
    main()
