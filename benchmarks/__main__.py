"""``python -m benchmarks [--quick] [--scenario NAME]...``: pgtaskq beside its peers.

Runs the chosen scenarios (all by default) on one server in one run, prints a table per
scenario, and writes each table into its own marked section of ``benchmarks/RESULTS.md``
(sections written by other benchmarks are kept), the raw figures into
``benchmarks/results.json`` and the throughput chart into ``benchmarks/throughput.png``.

PostgreSQL: ``$PGTASKQ_BENCH_DSN`` (databases ``bench_*`` are created on that server), else
an embedded server. Redis: ``$REDIS_URL`` (default the local one); when none answers, the
Redis peers are skipped with a note. Peer libraries: ``pip install -r
benchmarks/requirements.txt`` (``--install`` does it into this interpreter's environment).
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.bench_worker import Context
from benchmarks.common import BenchError, Table, log


def _worker(name: str, **kwargs: Any) -> Callable[[Context], tuple[Table, dict]]:
    def run(ctx: Context) -> tuple[Table, dict]:
        from benchmarks import bench_worker

        return getattr(bench_worker, f"scenario_{name}")(ctx, **kwargs)
    return run


def _module(module: str, function: str) -> Callable[[Context], tuple[Table, dict]]:
    def run(ctx: Context) -> tuple[Table, dict]:
        return getattr(importlib.import_module(module), function)(ctx)
    return run


def _enqueue(ctx: Context) -> tuple[Table | None, dict]:
    """bench_enqueue.py keeps its own section of RESULTS.md (the Enqueue table)."""
    from benchmarks import bench_enqueue

    # A quick look prints its table but leaves the recorded Enqueue section alone, as
    # --no-write does.
    args = ["--rounds", "1", "--seconds", "2", "--jobs", "20000"] if ctx.quick else []
    if ctx.write and not ctx.quick:
        args.append("--update-results")
    if bench_enqueue.main(args) != 0:
        raise BenchError("bench_enqueue failed")
    return None, {}


SCENARIOS: dict[str, tuple[str, Callable[[Context], tuple[Table | None, dict]]]] = {
    "enqueue": ("single and bulk enqueue beside pgqueuer and pgbench (bench_enqueue.py, "
                "its own section)", _enqueue),
    "concurrent_enqueue": ("K = 1, 8, 32 processes enqueueing one job per call: pgtaskq "
                           "with and without wake-ups, peers, bare INSERT, pgbench, PgBouncer",
                           _module("benchmarks.bench_concurrent_enqueue",
                                   "scenario_concurrent_enqueue")),
    "ceiling": ("pgbench running pgtaskq's claim/complete SQL, no Python",
                _worker("ceiling")),
    "drain": ("drain N jobs, one worker process at concurrency 8, every system",
              _worker("drain")),
    "latency": ("pickup latency p50/p95/p99 of an idle worker, every system",
                _worker("latency")),
    "processes": ("pgtaskq with 1, 2, 4, 8 and 16 worker processes", _worker("processes")),
    "scale": ("pgtaskq: drain rate at 10k vs 1M queued, worker RSS over 1M jobs",
              _worker("scale")),
    "unrunnable": ("pgtaskq: drain behind 200k unknown-task or 1M deferred higher-priority "
                   "jobs vs none", _module("benchmarks.bench_parking", "scenario_unrunnable")),
    "bloat": ("pgtaskq: table/index size and dead tuples under steady load",
              _module("benchmarks.bench_soak", "scenario_bloat")),
    "pool": ("pgtaskq --pool thread vs process: no-op drain (beside pgqueuer), CPU-bound "
             "jobs, timeout enforcement, memory of a leaky task with recycling",
             _module("benchmarks.bench_pool", "scenario_pool")),
    "chaos": ("pgtaskq: steady load while workers are SIGKILLed and PostgreSQL restarts",
              _module("benchmarks.bench_soak", "scenario_chaos")),
}


INTRO = """## Worker, peers, scale and chaos (`python -m benchmarks`)

Written by `python -m benchmarks` (or `make bench`): each table below is replaced by the
run that measured it, and the machine section says which run that was. Every system runs
the same job body, one `O_APPEND` write of the job's number to a file, and that file
proves delivery: each table says whether every job ran exactly once. Figures are medians
of repeated runs on one server in one run; see benchmarks/README.rst for how each is
taken and `python -m benchmarks --help` for options.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="scenarios:\n" + "\n".join(f"  {k:10} {v[0]}" for k, v in SCENARIOS.items()))
    parser.add_argument("--quick", action="store_true",
                        help="small N, one run each, ~1 minute soaks: to check the harness")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                        help="run only this scenario (repeatable; default: all)")
    parser.add_argument("--repeat", type=int, help="runs per figure (default 3, quick 1)")
    parser.add_argument("--duration", type=float,
                        help="seconds of steady load for bloat and chaos "
                             "(default 600 and 180, quick 60 and 45)")
    parser.add_argument("--install", action="store_true",
                        help="pip install -r benchmarks/requirements.txt first")
    parser.add_argument("--no-write", action="store_true",
                        help="print the tables only; leave RESULTS.md and the chart alone")
    args = parser.parse_args(argv)

    if args.install:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-r",
                        str(common.BENCH_DIR / "requirements.txt")], check=True)
    server = common.server_dsn()
    redis = common.redis_url()
    if redis is None:
        print("note: no Redis answered at $REDIS_URL: the Redis peers (celery, rq, dramatiq, "
              "huey) are skipped", file=sys.stderr)
    ctx = Context(server, redis, args.quick, args.repeat or (1 if args.quick else 3),
                  Path(tempfile.mkdtemp(prefix="pgtaskq-bench-")), args.duration,
                  write=not args.no_write)
    names = args.scenario or list(SCENARIOS)
    if not args.no_write:
        common.write_section("bench:intro", INTRO)
    failures = 0
    for name in names:
        log(f"scenario {name}: {SCENARIOS[name][0]}")
        started = time.monotonic()
        when = (f"measured {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load "
                f"average {os.getloadavg()[0]:.2f} at the start")
        try:
            table, raw = SCENARIOS[name][1](ctx)
        except Exception as exc:  # a broken scenario must not lose the others' figures
            failures += 1
            if not isinstance(exc, BenchError):
                traceback.print_exc()
            log(f"scenario {name} failed: {exc!r}")
            table, raw = Table(f"{name}: failed", ["error"], [[repr(exc).splitlines()[0]]]), {}
        if table is None:  # the scenario wrote its own section
            continue
        table.notes.append(f"{when}; took {time.monotonic() - started:.0f} s"
                           + (" (--quick)" if args.quick else ""))
        print(table.text(), flush=True)
        if not args.no_write:
            common.save_raw(name, {"quick": args.quick, "repeat": ctx.repeat, **raw})
            common.write_section(f"bench:{name}", table.markdown())
    if not args.no_write:
        info = common.machine_info(server)
        common.write_section("bench:machine", _machine_markdown(info, args, names))
        try:
            from benchmarks.chart import throughput_chart

            throughput_chart(common.load_raw(), common.BENCH_DIR / "throughput.png")
        except ImportError as exc:
            log(f"no chart ({exc}): pip install -r benchmarks/requirements.txt")
    return 1 if failures else 0


def _machine_markdown(info: dict[str, Any], args: argparse.Namespace,
                      names: list[str]) -> str:
    pg = info["postgresql"]
    packages = common.versions(["pgtaskq", "psycopg", "pgqueuer", "asyncpg", "procrastinate",
                                "celery", "rq", "dramatiq", "huey", "redis", "kombu"])
    command = "python -m benchmarks" + (" --quick" if args.quick else "") + "".join(
        f" --scenario {n}" for n in (args.scenario or []))
    return "\n".join([
        "### Machine and versions (last run)",
        "",
        f"- run: `{command}` on {info['date']}; load average at the end {info['load_average']}",
        f"- CPU: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; "
        f"Linux {info['kernel']}; Python {info['python']}",
        f"- PostgreSQL {pg['server_version']}: fsync {pg['fsync']}, synchronous_commit "
        f"{pg['synchronous_commit']}, shared_buffers {pg['shared_buffers']}, "
        f"max_connections {pg['max_connections']}, autovacuum {pg['autovacuum']} (as the "
        "server was found; the harness changes no setting; scale, bloat and chaos run on "
        "an embedded server with PostgreSQL's defaults)",
        "- " + ", ".join(f"{k} {v}" for k, v in packages.items()),
        f"- scenarios in this run: {', '.join(names)}",
    ]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
