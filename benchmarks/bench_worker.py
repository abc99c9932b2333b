"""Worker benchmarks: drain throughput and pickup latency beside the peers, the raw-SQL
ceiling, and pgtaskq at scale (10k vs 1M queued, RSS, 1 to 16 processes).

Run through the front-end (``python -m benchmarks --scenario drain``) or directly
(``python -m benchmarks.bench_worker [--quick]``: the issue-3 set, drain + latency + ceiling
for pgtaskq, pgqueuer and procrastinate).

How each figure is taken, the same way for every system:

- drain: N jobs are enqueued in bulk while no worker runs; then the worker process starts.
  The clock runs from the first job's start (from the run log, so process start-up is not
  counted) to the moment the system shows no unacknowledged job left (PostgreSQL systems:
  its table has no queued/running rows; Redis systems: the last run was logged), so the
  figure includes writing every outcome. The run log then proves each job ran exactly once.
- latency: the worker is started and warmed up with a few jobs, left idle for a second, then
  200 jobs are enqueued one at a time 20 ms apart; latency is the job's logged start time
  minus the time just before the enqueue call (so it includes the enqueue's own commit).
- ceiling: pgbench runs pgtaskq's own claim and complete statements (rendered from
  ``pgtaskq.sql.worker``, so they stay the statements the worker runs) with 8 clients, each
  transaction claiming 10 jobs and acknowledging them: what PostgreSQL allows here with no
  Python at all.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import common
from benchmarks.common import BenchError, Delivery, Proc, RunLog, Table, log, ratio
from benchmarks.systems import System

PG_SYSTEMS = ["pgtaskq", "pgqueuer", "procrastinate"]
REDIS_SYSTEMS = ["celery", "rq", "dramatiq", "huey"]

DRAIN_JOBS = {"pgtaskq": 30_000, "pgqueuer": 30_000, "procrastinate": 3_000,
              "celery": 20_000, "rq": 10_000, "dramatiq": 20_000, "huey": 20_000}
"""Jobs per drain run, sized so each run lasts several seconds (procrastinate drains ~300/s)."""

LATENCY_JOBS = 200
LATENCY_GAP = 0.020


# -- experiments --------------------------------------------------------------------------

@dataclass
class DrainResult:
    system: str
    jobs: int
    processes: int
    seconds: float
    rate: float
    delivery: Delivery
    window_rates: dict[str, float] = field(default_factory=dict)
    rss_mib: list[tuple[int, float]] = field(default_factory=list)
    """(jobs done, worker RSS in MiB) samples."""


def _watch(procs: list[Proc], runlog: RunLog, target: int, timeout: float,
           rss_every: float | None = None) -> list[tuple[int, float]]:
    """Wait until the run log has ``target`` lines, sampling the workers' RSS."""
    samples: list[tuple[int, float]] = []
    deadline = time.monotonic() + timeout
    next_rss = time.monotonic()
    while True:
        done = runlog.count()
        if rss_every is not None and time.monotonic() >= next_rss:
            # The process may be exiting; a missed sample is fine.
            with contextlib.suppress(Exception):
                samples.append((done, sum(common.rss_bytes(p.pid) for p in procs) / 2**20))
            next_rss += rss_every
        if done >= target:
            return samples
        for proc in procs:
            proc.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"only {done} of {target} jobs ran within {timeout:.0f}s")
        time.sleep(0.005)


def drain(system: System, jobs: int, workdir: Path, *, processes: int = 1,
          concurrency: int = 8, windows: dict[str, tuple[int, int]] | None = None,
          rss_every: float | None = None, enqueued: bool = False,
          workers_first: bool = False) -> DrainResult:
    """Drain ``jobs`` pre-enqueued jobs; see the module docstring for the clock.

    ``workers_first``: start the workers on an empty queue, wait until all are ready,
    then enqueue every job in one statement, so that several processes start together
    instead of the first one up draining alone while the others import.
    """
    numbers = list(range(jobs))
    runlog = RunLog(workdir, f"{system.name}-drain")
    if not enqueued:
        system.reset()
    if not enqueued and not workers_first:
        t = time.monotonic()
        system.enqueue_bulk(numbers)
        log(f"{system.name}: {jobs:,} jobs enqueued in {time.monotonic() - t:.1f}s")
    procs = system.start_workers(runlog.env, processes, concurrency)
    if workers_first:
        common.wait_until(lambda: all("ready" in p.output() or not p.alive() for p in procs),
                          120, "every worker ready", interval=0.05)
        system.enqueue_bulk(numbers, chunk=jobs)
    try:
        samples = _watch(procs, runlog, jobs, timeout=60 + jobs / 50, rss_every=rss_every)
        if system.postgres:
            common.wait_until(lambda: system.remaining() == 0, 60, "the last acks",
                              interval=0.005)
        end = time.time()
    finally:
        for proc in procs:
            code = proc.stop()
            if code not in (0, -15, 143):
                log(f"{proc.name} exited with {code}: {proc.output()[-500:]}")
    runs = runlog.runs()
    first = min(r.start for r in runs)
    result = DrainResult(system.name, jobs, processes, end - first, jobs / (end - first),
                         common.delivery(runs, numbers), rss_mib=samples)
    starts = sorted(r.start for r in runs)
    for name, (a, b) in (windows or {}).items():
        result.window_rates[name] = (b - a) / (starts[b] - starts[a])
    return result


@dataclass
class LatencyResult:
    system: str
    latencies_ms: list[float]
    """Job start - the time just before the enqueue call."""
    after_commit_ms: list[float]
    """Job start - the time the enqueue call returned (its commit done): the pickup alone."""
    delivery: Delivery

    def p(self, q: float) -> float:
        return common.percentile(self.latencies_ms, q)


def latency(system: System, workdir: Path, jobs: int = LATENCY_JOBS,
            gap: float = LATENCY_GAP) -> LatencyResult:
    """Pickup latency of an idle worker; see the module docstring."""
    system.reset()
    runlog = RunLog(workdir, f"{system.name}-latency")
    procs = system.start_workers(runlog.env)
    warmup = [-1, -2, -3, -4, -5]
    try:
        for n in warmup:
            system.enqueue_one(n)
        _watch(procs, runlog, len(warmup), timeout=60)
        time.sleep(1.0)
        sent: dict[int, float] = {}
        committed: dict[int, float] = {}
        tick = time.monotonic()
        for n in range(jobs):
            sent[n] = time.time()
            system.enqueue_one(n)
            committed[n] = time.time()
            tick += gap
            time.sleep(max(0.0, tick - time.monotonic()))
        _watch(procs, runlog, len(warmup) + jobs, timeout=60)
    finally:
        for proc in procs:
            proc.stop()
    runs = [r for r in runlog.runs() if r.n >= 0]
    first_start: dict[int, float] = {}
    for r in runs:
        first_start.setdefault(r.n, r.start)
    return LatencyResult(system.name,
                         [(first_start[n] - sent[n]) * 1000 for n in sorted(first_start)],
                         [(first_start[n] - committed[n]) * 1000 for n in sorted(first_start)],
                         common.delivery(runs, range(jobs)))


def pgbench_ceiling(server: str, *, clients: int = 8, batch: int = 10, seconds: int = 10
                    ) -> float:
    """Jobs/s of pgtaskq's claim + complete statements driven by pgbench (no Python)."""
    from pgtaskq import TaskQueue, defaults
    from pgtaskq.sql import render
    from pgtaskq.sql import worker as worker_sql

    dsn = common.database(server, "bench_ceiling")
    schema = "ceiling"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    tq = TaskQueue(dsn, schema=schema)
    tq.install()
    tq.close()
    rows = 50_000 * seconds  # above the fastest rate seen here (claim-100: ~32,000 jobs/s)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {schema}.jobs (queue, task, args, max_attempts) "
                     "SELECT 'default', 'bench.record', jsonb_build_array(g), 20 "
                     "FROM generate_series(1, %s) g", (rows,))
        conn.execute(f"VACUUM ANALYZE {schema}.jobs")
    claim = ("SELECT coalesce(array_agg(id ORDER BY id), '{{}}')::text AS ids, "
             "coalesce(array_agg(attempts ORDER BY id), '{{}}')::text AS attempts, "
             "count(*) AS n FROM (" + worker_sql.CLAIM + ") AS claimed")
    fixed = {"worker_id": ":client_id::bigint", "tasks": "'{bench.record}'", "limit": str(batch),
             "lease": "60", "queues": "NULL", "claimers": str(defaults.CLAIMERS),
             "ids": ":ids", "attempts": ":attempts",
             "kinds": "array_fill('succeeded'::text, ARRAY[:n::integer])", "backoff_base": "5",
             "backoff_cap": "3600", "wait_buckets": "array_fill(0, ARRAY[:n::integer])",
             "run_buckets": "array_fill(0, ARRAY[:n::integer])",
             # the per-minute rollup of the batch (one queue and task, all succeeded)
             "batch_size": ":n::integer", "g_queues": "'{default}'", "g_tasks": "'{bench.record}'",
             "g_succeeded": "ARRAY[:n::integer]", "g_failed": "'{0}'", "g_retried": "'{0}'",
             "g_cancelled": "'{0}'", "g_wait": "array_fill(0, ARRAY[64])",
             "g_run": "array_fill(0, ARRAY[64])"}

    def pgbench_sql(template: str) -> str:
        text = render(schema, template)
        # Parameters the ceiling does not need (errors, results, delays, or columns added
        # later) are NULL arrays: unnest() pads them to the batch's length.
        text = re.sub(r"%\((\w+)\)s", lambda m: fixed.get(m.group(1), "NULL"), text)
        text = re.sub(r"--[^\n]*", "", text.replace("%%", "%"))  # comments end at newlines
        return " ".join(text.split())

    script = (pgbench_sql(claim) + "\n\\gset\n" + pgbench_sql(worker_sql.COMPLETE) + ";\n")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    done = subprocess.run(["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "2",
                           "-T", str(seconds), "-f", f.name, dsn],
                          capture_output=True, text=True, timeout=seconds + 120)
    match = re.search(r"tps = ([\d.]+) \(without initial", done.stdout)
    if done.returncode != 0 or not match:
        raise BenchError(f"pgbench failed: {done.stderr[-2000:]}{done.stdout[-1000:]}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return float(match.group(1)) * batch


# -- scenarios ----------------------------------------------------------------------------

@dataclass
class Context:
    """What the front-end hands each scenario."""

    server: str
    redis: str | None
    quick: bool
    repeat: int
    workdir: Path
    duration: float | None = None
    """Seconds of steady load for the soaks (None: the scenario's default)."""
    write: bool = True
    """False with ``--no-write``: scenarios that keep their own section leave it alone."""


def _systems(ctx: Context, names: list[str]) -> tuple[list[System], list[str]]:
    from benchmarks import systems

    made, skipped = [], []
    for name in names:
        try:
            made.append(systems.make(name, ctx.server, ctx.redis))
        except BenchError as exc:
            skipped.append(f"{name} skipped: {exc}")
            log(f"{name} skipped: {exc}")
    return made, skipped


def _jobs(ctx: Context, name: str) -> int:
    return max(1_000, DRAIN_JOBS[name] // 5) if ctx.quick else DRAIN_JOBS[name]


def scenario_drain(ctx: Context, names: list[str] | None = None) -> tuple[Table, dict]:
    """Drain throughput, one worker process at concurrency 8, every system."""
    names = names or PG_SYSTEMS + REDIS_SYSTEMS
    made, skipped = _systems(ctx, names)
    raw: dict[str, Any] = {}
    for system in made:
        rates, checks = [], []
        try:
            for i in range(ctx.repeat):
                result = drain(system, _jobs(ctx, system.name), ctx.workdir)
                rates.append(result.rate)
                checks.append(str(result.delivery))
                log(f"drain {system.name} run {i + 1}: {result.rate:,.0f} jobs/s, "
                    f"{result.delivery}")
        except Exception as exc:  # one system failing must not lose the others' figures
            skipped.append(f"{system.name} failed: {str(exc).strip().splitlines()[0]}")
            log(f"drain {system.name} failed: {exc!r}")
        finally:
            system.close()
        if rates:
            raw[system.name] = {"rates": rates, "median": common.median(rates),
                                "jobs": _jobs(ctx, system.name), "delivery": checks,
                                "settings": system.settings}
    return _rate_table("Drain: one worker process, concurrency 8 (jobs/s, median of "
                       f"{ctx.repeat})", raw, skipped), raw


def _rate_table(title: str, raw: dict[str, Any], skipped: list[str]) -> Table:
    base = raw.get("pgtaskq", {}).get("median", float("nan"))
    table = Table(title, ["system", "jobs/s", "runs", "jobs per run", "ratio to pgtaskq",
                          "exactly once"])
    for name, data in raw.items():
        once = all(d.startswith("all ") for d in data["delivery"])
        table.rows.append([name, data["median"],
                           " / ".join(f"{r:,.0f}" for r in data["rates"]), data["jobs"],
                           ratio(data["median"], base),
                           "yes" if once else "; ".join(data["delivery"])])
    table.notes.extend(f"{name}: {data['settings']}" for name, data in raw.items())
    table.notes.extend(skipped)
    return table


def scenario_latency(ctx: Context, names: list[str] | None = None) -> tuple[Table, dict]:
    """Pickup latency of an idle worker, every system."""
    names = names or PG_SYSTEMS + REDIS_SYSTEMS
    made, skipped = _systems(ctx, names)
    raw: dict[str, Any] = {}
    for system in made:
        per_run = []
        try:
            for i in range(ctx.repeat):
                result = latency(system, ctx.workdir)
                per_run.append({
                    "p50": result.p(50), "p95": result.p(95), "p99": result.p(99),
                    "c50": common.percentile(result.after_commit_ms, 50),
                    "c99": common.percentile(result.after_commit_ms, 99),
                    "delivery": str(result.delivery)})
                log(f"latency {system.name} run {i + 1}: p50 {result.p(50):.2f} ms, "
                    f"p95 {result.p(95):.2f}, p99 {result.p(99):.2f} ({result.delivery})")
        except Exception as exc:  # one system failing must not lose the others' figures
            skipped.append(f"{system.name} failed: {str(exc).strip().splitlines()[0]}")
            log(f"latency {system.name} failed: {exc!r}")
        finally:
            system.close()
        if per_run:
            raw[system.name] = {
                "runs": per_run, "settings": system.settings,
                **{q: common.median([r[q] for r in per_run])
                   for q in ("p50", "p95", "p99", "c50", "c99")},
            }
    base = raw.get("pgtaskq", {}).get("p50", float("nan"))
    table = Table(f"Pickup latency, idle worker, {LATENCY_JOBS} jobs {LATENCY_GAP * 1000:.0f} "
                  f"ms apart (ms, median of {ctx.repeat} runs)",
                  ["system", "p50", "p95", "p99", "p50 ratio to pgtaskq",
                   "after commit p50", "after commit p99", "exactly once"])
    for name, data in raw.items():
        once = all(r["delivery"].startswith("all ") for r in data["runs"])
        table.rows.append([name, data["p50"], data["p95"], data["p99"],
                           ratio(data["p50"], base), data["c50"], data["c99"],
                           "yes" if once else "no"])
    table.notes.append("p50/p95/p99: logged job start - the time just before the enqueue call "
                       "(includes the enqueue's own commit); 'after commit': from the moment "
                       "the enqueue call returned, i.e. the pickup alone")
    table.notes.extend(skipped)
    return table, raw


def scenario_ceiling(ctx: Context) -> tuple[Table, dict]:
    """pgbench running pgtaskq's claim/complete statements: the no-Python ceiling."""
    seconds = 5 if ctx.quick else 10
    raw: dict[str, Any] = {}
    table = Table("Raw SQL ceiling: pgtaskq's claim + complete statements under pgbench "
                  "(jobs/s)", ["clients", "jobs per claim", "jobs/s", "runs"])
    for clients, batch in ((8, 10), (1, 10), (8, 100)):
        rates = [pgbench_ceiling(ctx.server, clients=clients, batch=batch, seconds=seconds)
                 for _ in range(ctx.repeat)]
        log(f"ceiling {clients} clients claim-{batch}: {rates}")
        raw[f"{clients}x{batch}"] = {"rates": rates, "median": common.median(rates)}
        table.rows.append([clients, batch, common.median(rates),
                           " / ".join(f"{r:,.0f}" for r in rates)])
    table.notes.append(f"each pgbench transaction: claim N (the worker's CLAIM) then one "
                       f"COMPLETE of those N; {seconds} s per run, -M prepared (as the worker, "
                       "whose psycopg prepares repeated statements)")
    return table, raw


def scenario_processes(ctx: Context) -> tuple[Table, dict]:
    """pgtaskq drain with 1, 2, 4, 8 and 16 worker processes (concurrency 8 each)."""
    from benchmarks.systems import Pgtaskq

    jobs = 10_000 if ctx.quick else 50_000
    raw: dict[str, Any] = {}
    table = Table(f"pgtaskq: worker processes on one server ({jobs:,} jobs enqueued in one "
                  f"statement once all workers are ready, concurrency 8 each, jobs/s, median "
                  f"of {ctx.repeat})",
                  ["processes", "jobs/s", "runs", "ratio to 1 process", "exactly once"])
    system = Pgtaskq(ctx.server)
    try:
        for processes in (1, 2, 4, 8, 16):
            results = [drain(system, jobs, ctx.workdir, processes=processes,
                             workers_first=True) for _ in range(ctx.repeat)]
            rates = [r.rate for r in results]
            log(f"processes {processes}: {rates}")
            raw[str(processes)] = {"rates": rates, "median": common.median(rates),
                                   "delivery": [str(r.delivery) for r in results]}
    finally:
        system.close()
    base = raw["1"]["median"]
    for processes, data in raw.items():
        once = all(d.startswith("all ") for d in data["delivery"])
        table.rows.append([int(processes), data["median"],
                           " / ".join(f"{r:,.0f}" for r in data["rates"]),
                           ratio(data["median"], base),
                           "yes" if once else "; ".join(data["delivery"])])
    return table, raw


def scenario_scale(ctx: Context) -> tuple[Table, dict]:
    """Drain rate with 10k vs 1M queued, and worker RSS over the whole 1M drain."""
    from benchmarks.bench_soak import EmbeddedServer
    from benchmarks.systems import Pgtaskq

    big = 100_000 if ctx.quick else 1_000_000
    small = 10_000
    window = (500, 9_500)
    # PostgreSQL's defaults (autovacuum on), as for the bloat soak: a million claimed rows
    # leave a million dead entries at the head of the ready index until VACUUM removes
    # them, so a server with autovacuum off (the shared one here) measures that instead.
    server = EmbeddedServer()
    system = Pgtaskq(server.dsn)
    raw: dict[str, Any] = {}
    try:
        small_rates = []
        for _ in range(ctx.repeat):
            r = drain(system, small, ctx.workdir, windows={"w": window})
            small_rates.append(r.window_rates["w"])
        log(f"scale: {small:,} queued: {small_rates}")
        system.reset()
        t = time.monotonic()
        system.enqueue_bulk(list(range(big)))
        log(f"scale: {big:,} enqueued in {time.monotonic() - t:.0f}s")
        # No ANALYZE: a burst lands on statistics taken when the table was quiet, as in
        # production until autovacuum catches up; the claim must not depend on them.
        with psycopg.connect(system.dsn, autocommit=True) as conn:
            plan = _explain_claim(conn, system.schema)
        windows = {"first 10k": window, "middle": (big // 2, big // 2 + 9_000),
                   "last 10k": (big - 9_500, big - 500)}
        result = drain(system, big, ctx.workdir, windows=windows, rss_every=2.0,
                       enqueued=True)
    finally:
        system.close()
        server.close()
    rss = result.rss_mib
    raw = {"small": {"queued": small, "rates": small_rates,
                     "median": common.median(small_rates)},
           "big": {"queued": big, "windows": result.window_rates, "rate": result.rate,
                   "delivery": str(result.delivery), "rss_mib": rss},
           "explain": plan}
    base = raw["small"]["median"]
    table = Table(f"pgtaskq at scale: drain rate with {small:,} vs {big:,} queued (jobs/s)",
                  ["queued at the start", "window (jobs)", "jobs/s", "ratio to 10k"])
    table.rows.append([small, f"{window[0]:,}-{window[1]:,}", base, "1.00x"])
    for name, rate in result.window_rates.items():
        a, b = windows[name]
        table.rows.append([big, f"{name}: {a:,}-{b:,}", rate, ratio(rate, base)])
    table.rows.append([big, "whole drain", result.rate, ratio(result.rate, base)])
    if rss:
        early = [m for done, m in rss if done >= big * 0.05][:1] or [rss[0][1]]
        table.notes.append(
            f"worker RSS over the {big:,}-job drain: {early[0]:.0f} MiB after 5%, "
            f"max {max(m for _, m in rss):.0f} MiB, {rss[-1][1]:.0f} MiB at the end "
            f"({len(rss)} samples)")
    table.notes.append(f"{big:,}-job drain: {result.delivery}")
    scans = [line.strip() for line in plan.splitlines()
             if "Scan" in line or "Sort" in line or "Execution Time" in line]
    table.notes.append(f"the claim at {big:,} queued (not analyzed), as the worker runs it: "
                       + "; ".join(scans))
    table.appendix = ("Claim plan at the start of the big drain (`EXPLAIN (ANALYZE, BUFFERS)` "
                      "with the worker's planner settings):\n\n```\n" + plan + "\n```")
    return table, raw


def _explain_claim(conn: psycopg.Connection, schema: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the query inside the worker's claim function, run as
    the worker runs it and rolled back so nothing is leased."""
    from benchmarks.claim_plan import explain_claim

    return explain_claim(conn, schema, tasks=["bench.record"], limit=8, fmt="text")


# -- direct use ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    """The issue-3 set: drain + latency + ceiling for the PostgreSQL systems."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_worker",
                                     description=main.__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=None)
    args = parser.parse_args(argv)
    ctx = Context(common.server_dsn(), None, args.quick, args.repeat or (1 if args.quick else 3),
                  Path(tempfile.mkdtemp(prefix="pgtaskq-bench-")))
    for table, _ in (scenario_drain(ctx, PG_SYSTEMS), scenario_latency(ctx, PG_SYSTEMS),
                     scenario_ceiling(ctx)):
        print(table.text())


if __name__ == "__main__":
    main()
