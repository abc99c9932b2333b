"""Scenario ``unrunnable``: a drain behind jobs no claim can take (issue 12).

Three drains of the same 20,000 runnable jobs by one worker process at concurrency 8, on
the harness's server (``$PGTASKQ_BENCH_DSN`` or an embedded one; autovacuum must be on, as
in production: parking leaves dead index entries that VACUUM removes), each repeated:

- nothing else queued (the reference);
- behind 200,000 jobs of a task no live worker registers, at a higher priority;
- behind 1,000,000 jobs due tomorrow, at a higher priority.

Before issue 12 every claim walked the blocking jobs (0.26x with 200,000 unknown-task
jobs; ~200 ms per claim with 1,000,000 deferred ones on PostgreSQL 15). Now a worker's
parker moves them out of the ready index once, when they appear: that one-off cost is
measured on its own (the first worker's start, to the blocking jobs being parked and the
table vacuumed), and the measured drains run after it, as they would in production.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from benchmarks import common
from benchmarks.bench_worker import Context, drain
from benchmarks.common import RunLog, Table, log, ratio

RUNNABLE = 20_000
UNKNOWN = 200_000
DEFERRED = 1_000_000


def scenario_unrunnable(ctx: Context) -> tuple[Table, dict]:
    from benchmarks.systems import Pgtaskq

    class Bench(Pgtaskq):
        def remaining(self) -> int:
            # only the drain's own jobs, the blockers are parked; through the ready and
            # running indexes (a count of the whole table, a million rows, polled every
            # 5 ms at the end of the drain, would be part of what is measured)
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                row = conn.execute(
                    f'SELECT (SELECT count(*) FROM "{self.schema}".jobs '
                    "         WHERE status = 'queued' AND NOT parked AND run_at <= now()) "
                    f'     + (SELECT count(*) FROM "{self.schema}".jobs '
                    "         WHERE status = 'running')").fetchone()
            return int(row[0]) if row else 0

    scale = 10 if ctx.quick else 1
    system = Bench(ctx.server)
    raw: dict[str, Any] = {}
    try:
        with psycopg.connect(system.dsn, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        for name, blockers, sql in (
                ("none", 0, None),
                ("unknown task", UNKNOWN // scale,
                 "SELECT 'default', 'bench.typo', 1, 10, now() FROM generate_series(1, %s)"),
                ("due tomorrow", DEFERRED // scale,
                 "SELECT 'default', 'bench.record', 1, 10, now() + interval '1 day' "
                 "FROM generate_series(1, %s)")):
            system.reset()
            parking = None
            if sql is not None:
                with psycopg.connect(system.dsn, autocommit=True) as conn:
                    t = time.monotonic()
                    conn.execute(f'INSERT INTO "{system.schema}".jobs '
                                 "(queue, task, max_attempts, priority, run_at) " + sql,
                                 (blockers,))
                    conn.execute(f'ANALYZE "{system.schema}".jobs')
                    log(f"unrunnable/{name}: {blockers:,} blockers in "
                        f"{time.monotonic() - t:.0f}s")
                parking = _park(system, ctx)
                log(f"unrunnable/{name}: parked in {parking:.1f}s")
            rates = []
            for _ in range(ctx.repeat):
                system.enqueue_bulk(list(range(RUNNABLE // scale)))
                result = drain(system, RUNNABLE // scale, ctx.workdir, enqueued=True)
                rates.append(result.rate)
                log(f"unrunnable/{name}: {result.rate:,.0f} jobs/s, {result.delivery}")
            raw[name] = {"blockers": blockers, "rates": rates,
                         "median": common.median(rates), "parking_s": parking}
    finally:
        system.close()
    base = raw["none"]["median"]
    table = Table(f"Drain of {RUNNABLE // scale:,} runnable jobs behind jobs no claim can "
                  f"take (one process, concurrency 8, jobs/s, median of {ctx.repeat})",
                  ["blocking jobs (priority 10, runnable at 0)", "jobs/s", "ratio",
                   "one-off parking"])
    labels = {"none": "none",
              "unknown task": f"{UNKNOWN // scale:,} of a task no worker registers",
              "due tomorrow": f"{DEFERRED // scale:,} due tomorrow"}
    for name, figures in raw.items():
        parking = figures["parking_s"]
        table.rows.append([labels[name], figures["median"], ratio(figures["median"], base),
                           "-" if parking is None else f"{parking:.1f}s"])
    table.notes.append(f"PostgreSQL {version} (autovacuum on); before issue 12 the "
                       "unknown-task drain ran at 0.26x, and each claim behind 1,000,000 "
                       "deferred jobs took ~200 ms")
    table.notes.append("one-off parking: a worker started with the blockers queued, until "
                       "its parker has parked them all and the jobs table is vacuumed")
    return table, raw


def _park(system: Any, ctx: Context) -> float:
    """Start a worker, wait until every blocking job is parked and the ready index is
    clean again (the VACUUM the parker asks for); return the seconds it took."""
    runlog = RunLog(ctx.workdir, "pgtaskq-park")
    t = time.monotonic()
    procs = system.start_workers(runlog.env, 1, 8)
    try:
        def parked() -> bool:
            with psycopg.connect(system.dsn, autocommit=True) as conn:
                left = conn.execute(
                    f'SELECT count(*) FROM "{system.schema}".jobs WHERE NOT parked').fetchone()
                # the parker's VACUUM done: the parked rows' old versions are gone (a
                # few dead rows of the last rounds may remain, under autovacuum's bar)
                vacuumed = conn.execute(
                    "SELECT n_dead_tup < 1000 + 0.01 * n_live_tup FROM pg_stat_user_tables "
                    "WHERE schemaname = %s AND relname = 'jobs'", (system.schema,)).fetchone()
            return left[0] == 0 and bool(vacuumed and vacuumed[0])
        common.wait_until(parked, 600, "the blocking jobs parked", interval=0.2)
        return time.monotonic() - t
    finally:
        for proc in procs:
            proc.stop()
