"""The process pool beside the thread pool (``python -m benchmarks --scenario pool``).

One run, one server, runs interleaved (thread, process, pgqueuer, thread, process, ...) so
that the ratios compare figures taken under the same load:

- drain: no-op jobs (the drain scenario's body), one worker process at concurrency 8, with
  ``--pool thread`` (the default), ``--pool process``, and pgqueuer's defaults;
- CPU-bound: jobs of a fixed amount of pure-Python work (~20 ms on an idle core; the loop
  count is calibrated once, before the runs, from the fastest of several timings), at
  concurrency 2 and 8, threads vs processes;
- timeout enforcement: jobs that sleep for ten minutes with ``timeout=1``, on the process
  pool with the default kill grace (2 s): seconds from the job's start to its ``failed``
  outcome (``job_history``), against the bound ``timeout + grace + 1 s``;
- memory: a task that leaks 10 KiB per job, 100,000 jobs (20,000 with ``--quick``), on the
  process pool with and without ``--max-memory-per-child``: resident memory of the worker
  and its children together (psutil), its peak and its value at the end.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import common
from benchmarks.bench_worker import Context, drain
from benchmarks.common import BenchError, RunLog, Table, log, ratio
from benchmarks.systems import Pgtaskq, make

PROCESS = ["--pool", "process"]
SPIN_SECONDS = 0.020
TIMEOUT, KILL_GRACE = 1.0, 2.0
LEAK_LIMIT_MIB = 60


def calibrate_spin(seconds: float = SPIN_SECONDS) -> int:
    """Loop count of ``bench.spin`` that takes ``seconds`` on an idle core (fastest of 15)."""
    loops = 100_000
    best = float("inf")
    for _ in range(15):
        started = time.perf_counter()
        x = 0
        for i in range(loops):
            x += i * i
        best = min(best, time.perf_counter() - started)
    return int(loops * seconds / best)


def _drain_task(system: Pgtaskq, task: str, jobs: int, workdir: Path, concurrency: int,
                rss_every: float | None = None) -> Any:
    system.reset()
    for start in range(0, jobs, 10_000):
        chunk = range(start, min(jobs, start + 10_000))
        system.tq.enqueue_many(task, [{"args": [n]} for n in chunk])
    return drain(system, jobs, workdir, concurrency=concurrency, enqueued=True,
                 rss_every=rss_every)


def _timeouts(server: str, workdir: Path, jobs: int) -> list[float]:
    """Seconds from start to ``failed`` of ``jobs`` hanging jobs (timeout 1 s)."""
    system = Pgtaskq(server, worker_args=PROCESS)
    try:
        system.reset()
        runlog = RunLog(workdir, "pool-timeouts")
        procs = system.start_workers(runlog.env, 1, concurrency=jobs)
        common.wait_until(lambda: "ready" in procs[0].output(), 60, "worker ready")
        system.tq.enqueue_many("bench.hang", [{"args": [n]} for n in range(jobs)])
        with psycopg.connect(system.dsn, autocommit=True) as conn:
            query = (f'SELECT extract(epoch FROM finished_at - started_at) FROM '
                     f'"{system.schema}".job_history WHERE status = \'failed\'')
            common.wait_until(lambda: len(conn.execute(query).fetchall()) >= jobs, 60,
                              "hanging jobs failed", interval=0.05)
            seconds = [float(r[0]) for r in conn.execute(query).fetchall()]
        for proc in procs:
            proc.stop()
        return seconds
    finally:
        system.close()


def scenario_pool(ctx: Context) -> tuple[Table, dict]:
    quick = ctx.quick
    raw: dict[str, Any] = {"load_before": os.getloadavg()}
    table = Table("Thread and process pools: one worker process (median of "
                  f"{ctx.repeat}, runs interleaved)",
                  ["figure", "threads", "processes", "pgqueuer", "processes / threads",
                   "target"])

    # -- no-op drain --------------------------------------------------------------------
    jobs = 10_000 if quick else 30_000
    made: dict[str, Any] = {"threads": Pgtaskq(ctx.server),
                            "processes": Pgtaskq(ctx.server, worker_args=PROCESS)}
    try:
        made["pgqueuer"] = make("pgqueuer", ctx.server, None)
    except BenchError as exc:
        log(f"pgqueuer skipped: {exc}")
    rates: dict[str, list[float]] = {name: [] for name in made}
    try:
        for i in range(ctx.repeat):
            for name, system in made.items():
                result = drain(system, jobs, ctx.workdir)
                if not str(result.delivery).startswith("all "):
                    raise BenchError(f"{name}: {result.delivery}")
                rates[name].append(result.rate)
                log(f"pool drain {name} run {i + 1}: {result.rate:,.0f} jobs/s "
                    f"(load {os.getloadavg()[0]:.2f})")
    finally:
        for system in made.values():
            system.close()
    med = {name: common.median(r) for name, r in rates.items() if r}
    raw["drain"] = {"jobs": jobs, "rates": rates, "median": med}
    table.rows.append([f"drain {jobs:,} no-op jobs, concurrency 8 (jobs/s)",
                       med["threads"], med["processes"], med.get("pgqueuer", float("nan")),
                       ratio(med["processes"], med["threads"]), "processes >= 10,000"])

    # -- CPU-bound ----------------------------------------------------------------------
    loops = calibrate_spin()
    os.environ["PGTASKQ_BENCH_SPIN_LOOPS"] = str(loops)
    cpu_jobs = 100 if quick else 300
    raw["cpu"] = {"loops": loops, "jobs": cpu_jobs}
    for concurrency in (2, 8):
        seconds: dict[str, list[float]] = {"threads": [], "processes": []}
        pools = {"threads": Pgtaskq(ctx.server),
                 "processes": Pgtaskq(ctx.server, worker_args=PROCESS)}
        try:
            for i in range(ctx.repeat):
                for name, system in pools.items():
                    result = _drain_task(system, "bench.spin", cpu_jobs, ctx.workdir,
                                         concurrency)
                    seconds[name].append(result.seconds)
                    log(f"pool cpu c={concurrency} {name} run {i + 1}: {result.seconds:.2f}s "
                        f"(load {os.getloadavg()[0]:.2f})")
        finally:
            for system in pools.values():
                system.close()
        t, p = common.median(seconds["threads"]), common.median(seconds["processes"])
        raw["cpu"][str(concurrency)] = seconds
        table.rows.append([f"{cpu_jobs} CPU-bound jobs of ~20 ms, concurrency {concurrency} "
                           "(seconds)", t, p, "", f"{t / p:.2f}x faster",
                           "processes >= 1.8x faster" if concurrency == 2 else ""])

    # -- timeouts -----------------------------------------------------------------------
    hung = _timeouts(ctx.server, ctx.workdir, jobs=4)
    raw["timeouts"] = hung
    table.rows.append(["hanging job (timeout 1 s, kill grace 2 s): start to failed, "
                       "median / max of 4 (s)", "never", f"{common.median(hung):.2f} / "
                       f"{max(hung):.2f}", "", "",
                       f"<= {TIMEOUT + KILL_GRACE + 1:.0f} s"])

    # -- memory -------------------------------------------------------------------------
    leak_jobs = 20_000 if quick else 100_000
    raw["memory"] = {"jobs": leak_jobs}
    peaks = {}
    for label, args in (("no recycling", PROCESS),
                        (f"--max-memory-per-child {LEAK_LIMIT_MIB}",
                         [*PROCESS, "--max-memory-per-child", str(LEAK_LIMIT_MIB)])):
        system = Pgtaskq(ctx.server, worker_args=args)
        try:
            result = _drain_task(system, "bench.leak", leak_jobs, ctx.workdir, 8,
                                 rss_every=0.25)
        finally:
            system.close()
        samples = result.rss_mib
        peak = max((m for _, m in samples), default=float("nan"))
        last = samples[-1][1] if samples else float("nan")
        peaks[label] = peak
        step = max(1, len(samples) // 40)  # (jobs done, MiB), thinned for results.json
        raw["memory"][label] = {"samples": samples[::step], "rate": result.rate,
                                "peak_mib": peak, "end_mib": last}
        log(f"pool memory {label}: peak {peak:.0f} MiB, last {last:.0f} MiB, "
            f"{result.rate:,.0f} jobs/s")
        table.rows.append([f"leaking 10 KiB/job, {leak_jobs:,} jobs, concurrency 8: "
                           f"worker tree RSS peak / end (MiB), {label}", "",
                           f"{peak:.0f} / {last:.0f}", "", "",
                           "bounded" if "max-memory" in label else ""])
    raw["load_after"] = os.getloadavg()
    table.notes.append(
        f"load average before {raw['load_before'][0]:.2f}, after {raw['load_after'][0]:.2f} "
        "(2 shared cores: other suites ran meanwhile; compare ratios within this run)")
    table.notes.append(f"CPU job: {loops:,} loop iterations of `x += i * i` (~20 ms on an "
                       "idle core, calibrated in this run)")
    return table, raw
