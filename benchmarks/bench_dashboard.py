"""How long the web dashboard's overview takes to render with a million jobs queued.

Fills a fresh schema as ``bench_stats`` does (``--jobs`` live jobs over 4 queues and 20
tasks, 100k finished, two hours of rollups, 4 workers), serves ``Dashboard`` on the
standard library's WSGI server on 127.0.0.1, and times complete HTTP requests of the
overview (``GET /``: read the stats, render the HTML and SVG, send it) and of the first
page of the job list, right after the bulk load and after ``VACUUM ANALYZE``. The server
is ``$PGTASKQ_BENCH_DSN``, else an embedded PostgreSQL with default settings.

    python -m benchmarks.bench_dashboard [--jobs 1000000] [--runs 20]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import threading
import time
import uuid

import psycopg

from benchmarks import common
from benchmarks.common import server_dsn
from pgtaskq import TaskQueue
from pgtaskq.contrib.dashboard import Dashboard
from pgtaskq.contrib.dashboard.serve import make

BUDGET_MS = 300.0


def timed_gets(port: int, path: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        times.append((time.perf_counter() - began) * 1000)
        assert response.status == 200, body[:500]
        assert path != "/" or b'data-queue="queue0"' in body, "the overview lacks a queue"
    return times


def line(name: str, times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return (f"    {name:<22} median {statistics.median(ordered):6.1f} ms   "
            f"p95 {p95:6.1f} ms   max {ordered[-1]:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    options = parser.parse_args()
    dsn = server_dsn()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    tq = TaskQueue(dsn, schema=schema)
    tq.install()
    server = make(Dashboard(tq), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    worst = 0.0
    try:
        with psycopg.connect(tq.conninfo, autocommit=True) as conn:
            common.fill_stats_tables(conn, schema, options.jobs)
            print(f"{options.jobs:,} live jobs, 100,000 finished, 2h of rollups")
            for label in ("right after the bulk load:", "after VACUUM ANALYZE:"):
                print(f"  {label}")
                overview = timed_gets(port, "/", options.runs)
                worst = max(worst, statistics.median(overview))
                print(line("GET / (overview)", overview))
                print(line("GET /jobs (first page)", timed_gets(port, "/jobs", options.runs)))
                print(line("GET /jobs?task=...", timed_gets(
                    port, "/jobs?task=app.tasks.task_3", options.runs)))
                for table in ("jobs", "job_history", "stats_minute"):
                    conn.execute(f'VACUUM ANALYZE "{schema}".{table}')
        verdict = "within" if worst < BUDGET_MS else "OVER"
        print(f"  overview median, worst of the two: {worst:.1f} ms ({verdict} the "
              f"{BUDGET_MS:.0f} ms budget)")
    finally:
        server.shutdown()
        server.server_close()
        tq.close()
        tq.uninstall()


if __name__ == "__main__":
    main()
