"""Concurrent enqueue: K web processes enqueueing one job per call at once.

What a web fleet does to the producer path. PostgreSQL serialises the commits of every
transaction that sent a NOTIFY on one lock held across the WAL flush, so a queue whose
enqueue always notifies stops scaling with K. Each figure is jobs/s summed over K
processes (K = 1, 8, 32), each calling in a loop for ``--seconds``, all started together;
every call is its own transaction (autocommit, one job per call). Side by side, on the same
server and in the same run, rounds interleaved (a disturbance of the shared machine hits
every figure of a round alike; ratios are medians of per-round ratios):

- ``pgtaskq enqueue()``: the call as shipped, nobody waiting for a wake-up (the workers are
  busy, or there are none), so it sends no NOTIFY;
- ``pgtaskq enqueue(), a worker waiting``: a waiting worker is registered (a row in
  ``workers``; nothing claims), so every call notifies: what every enqueue cost before
  schema version 9;
- ``pgtaskq enqueue(delay=3600)``: the same call with the wake-up disabled (a job due in an
  hour never notifies), the reference of the issue's targets;
- ``pgtaskq enqueue() via PgBouncer``: the first call through PgBouncer in transaction mode
  (``prepare=False``, a pool of 8 server connections), when pgbouncer is installed;
- pgqueuer ``Queries.enqueue()`` (it notifies through a trigger) and procrastinate
  ``task.defer()`` (its insert trigger notifies), one job per call;
- bare psycopg: ``INSERT`` of one row per call into a minimal jobs table, the same
  ``INSERT`` with ``pg_notify`` in one statement, and the ``INSERT`` followed by the
  ``pg_notify`` in a transaction of its own (a psycopg pipeline with a Sync between), the design
  candidate "notify after the commit", from the same kind of processes;
- ``pgbench -c K -M prepared``: the same INSERT, and INSERT + NOTIFY, with no Python.

``python -m benchmarks --scenario concurrent_enqueue`` (``make bench`` runs it with the
others) or ``python -m benchmarks.bench_concurrent_enqueue`` runs it and records the table
in its section of benchmarks/RESULTS.md; ``$PGTASKQ_BENCH_DSN`` names the server.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.common import (
    BenchError,
    Table,
    ceiling_table,
    database,
    log,
    machine_info,
    server_dsn,
    write_section,
)

DATABASE = "bench_concurrent"
SCHEMA = "bench_cenq"
CEILING = "bench_cenq_ceiling"
TASK = "bench.noop"
KS = (1, 8, 32)
BOUNCER_POOL = 8

CEILING_TABLE = ceiling_table(CEILING)
INSERT = f"INSERT INTO {CEILING}.jobs (queue, task, args) VALUES ('default', '{TASK}', %s)"
INSERT_NOTIFY = (f"WITH j AS ({INSERT} RETURNING queue) "
                 "SELECT pg_notify('bench_events', 'q:' || queue) FROM j")
_PGBENCH_INSERT = (f"INSERT INTO {CEILING}.jobs (queue, task, args) "
                   f"VALUES ('default', '{TASK}', '[1,\"payload\"]')")
PGBENCH = {
    "pgbench INSERT": f"{_PGBENCH_INSERT};\n",
    # pgbench reads ":name" as a variable, so the payload's colon is spelled apart
    "pgbench INSERT + NOTIFY": (f"WITH j AS ({_PGBENCH_INSERT} RETURNING queue)\n"
                                "SELECT pg_notify('bench_events', 'q' || ':' || queue) FROM j;\n"),
}

PGTASKQ = "pgtaskq enqueue()"
WAITING = "pgtaskq enqueue(), a worker waiting"
NO_WAKE = "pgtaskq enqueue(delay=3600): no wake-up"
BOUNCER = "pgtaskq enqueue() via PgBouncer"
BARE = "psycopg INSERT"
BARE_NOTIFY = "psycopg INSERT + NOTIFY"
BARE_AFTER = "psycopg INSERT, then NOTIFY in its own transaction"


# -- what one process calls ---------------------------------------------------------------

def _call(variant: str, dsn: str, bouncer_dsn: str | None) -> Callable[[int], object]:
    """The one-job call of ``variant``, set up inside the child process."""
    if variant in (PGTASKQ, WAITING, NO_WAKE, BOUNCER):
        from pgtaskq import TaskQueue

        if variant == BOUNCER:
            assert bouncer_dsn is not None
            tq = TaskQueue(bouncer_dsn, schema=SCHEMA, prepare=False, pool_max_size=2)
        else:
            tq = TaskQueue(dsn, schema=SCHEMA, pool_max_size=2)
        if variant == NO_WAKE:
            return lambda n: tq.enqueue(TASK, args=[n, "payload"], delay=3600)
        return lambda n: tq.enqueue(TASK, args=[n, "payload"])
    if variant in (BARE, BARE_NOTIFY):
        conn = psycopg.connect(dsn, autocommit=True)
        statement = INSERT if variant == BARE else INSERT_NOTIFY
        return lambda n: conn.execute(statement, (f'[{n}, "payload"]',))
    if variant == BARE_AFTER:
        after = psycopg.connect(dsn, autocommit=True)

        def insert_then_notify(n: int) -> None:
            with after.pipeline() as pipeline:  # a Sync between: two transactions
                after.execute(INSERT, (f'[{n}, "payload"]',))
                pipeline.sync()
                after.execute("SELECT pg_notify('bench_events', 'q:default')")
        return insert_then_notify
    from benchmarks import systems

    server = os.environ["PGTASKQ_BENCH_SERVER"]
    if variant == "pgqueuer":
        return systems.Pgqueuer(server).enqueue_one
    procrastinate = systems.Procrastinate(server)
    procrastinate._ensure_open()
    return procrastinate.enqueue_one


def _child(variant: str, dsn: str, bouncer_dsn: str | None, seconds: float,
           barrier: Any, results: Any) -> None:
    try:
        call = _call(variant, dsn, bouncer_dsn)
        for n in range(20):  # warm up: connections open, statements prepared
            call(n)
    except Exception as exc:
        results.put(("error", f"{variant}: {exc!r}"))
        barrier.abort()
        return
    barrier.wait()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        call(count)
        count += 1
    results.put(("count", count / (time.perf_counter() - start)))


def processes(variant: str, k: int, dsn: str, bouncer_dsn: str | None,
              seconds: float) -> float:
    """Jobs/s of ``k`` processes calling ``variant`` together for ``seconds``."""
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(k + 1)
    results = context.Queue()
    children = [context.Process(target=_child, args=(variant, dsn, bouncer_dsn, seconds,
                                                     barrier, results)) for _ in range(k)]
    for child in children:
        child.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a child failed: it says why
        barrier.wait(timeout=120)
    rates = []
    errors = []
    for _ in children:
        kind, value = results.get(timeout=seconds + 120)
        (rates if kind == "count" else errors).append(value)
    for child in children:
        child.join(30)
    if errors:
        raise BenchError(errors[0])
    return sum(rates)


def pgbench(binary: str, dsn: str, script: str, k: int, seconds: float) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run(
            [binary, "-n", "-c", str(k), "-j", str(min(k, 2)), "-M", "prepared",
             "-T", str(max(1, round(seconds))), "-f", handle.name, dsn],
            capture_output=True, text=True, check=False)
    finally:
        os.unlink(handle.name)
    match = re.search(r"^tps = ([\d.]+)", out.stdout, re.M)
    if out.returncode or not match:
        raise BenchError(f"pgbench failed: {out.stderr.strip() or out.stdout.strip()}")
    return float(match.group(1))


# -- the run ------------------------------------------------------------------------------

def _reset(dsn: str) -> None:
    """Empty tables (a growing index must not favour the figure measured first) and a
    checkpoint (one starting during a figure would halve it)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {SCHEMA}.jobs, {CEILING}.jobs")
        conn.execute("CHECKPOINT")


def _waiting_worker(dsn: str, present: bool) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DELETE FROM {SCHEMA}.workers")
        # what a worker's rescuer does once the waiting one is gone (schema version 11)
        conn.execute(f"SELECT {SCHEMA}.close_wake_gate()")
        if present:
            conn.execute(f"""
                INSERT INTO {SCHEMA}.workers (host, pid, concurrency, pgtaskq_version,
                                              announces_waiting, waiting_since)
                VALUES ('bench', 0, 8, 'bench', true, now())""")


def run(server: str, *, rounds: int, seconds: float, ks: tuple[int, ...] = KS,
        peers: bool = True) -> tuple[dict[tuple[int, str], list[float]], list[str]]:
    from benchmarks.bench_enqueue import pgbench_path
    from pgtaskq import TaskQueue

    dsn = database(server, DATABASE)
    os.environ["PGTASKQ_BENCH_SERVER"] = server
    tq = TaskQueue(dsn, schema=SCHEMA)
    tq.uninstall()
    tq.install()
    tq.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(CEILING_TABLE)
        max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
    notes = []
    if max_connections < 2 * max(ks) + 20:
        raise BenchError(f"max_connections {max_connections} is too low for K={max(ks)}")
    bouncer = bouncer_dsn = None
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from pgbouncer_server import PgBouncer

        bouncer = PgBouncer(dsn, pool_size=BOUNCER_POOL)
        bouncer_dsn = bouncer.dsn(dsn)
    except BaseException as exc:  # pytest.skip when pgbouncer is not installed
        notes.append(f"no PgBouncer figure: {exc}")
    variants = [PGTASKQ, WAITING, NO_WAKE, BARE, BARE_NOTIFY, BARE_AFTER]
    if bouncer_dsn:
        variants.append(BOUNCER)
    if peers:
        for peer in ("pgqueuer", "procrastinate"):
            try:
                _peer_reset(peer, server)
                variants.append(peer)
            except Exception as exc:
                notes.append(f"{peer} skipped: {exc!r}"[:200])
    binary = pgbench_path()
    if binary is None:
        notes.append("no pgbench found: its figures are missing")
    samples: dict[tuple[int, str], list[float]] = {}
    try:
        for round_number in range(rounds):
            for k in ks:
                for variant in variants + (list(PGBENCH) if binary else []):
                    _reset(dsn)
                    if variant in ("pgqueuer", "procrastinate"):
                        _peer_reset(variant, server)
                    _waiting_worker(dsn, variant == WAITING)
                    if variant in PGBENCH:
                        assert binary is not None
                        rate = pgbench(binary, dsn, PGBENCH[variant], k, seconds)
                    else:
                        rate = processes(variant, k, dsn, bouncer_dsn, seconds)
                    samples.setdefault((k, variant), []).append(rate)
                    log(f"  round {round_number + 1} K={k:2} {variant:42} {rate:9,.0f}/s "
                        f"(load {os.getloadavg()[0]:.2f})")
    finally:
        if bouncer is not None:
            bouncer.stop()
    return samples, notes


def _peer_reset(peer: str, server: str) -> None:
    from benchmarks import systems

    system = systems.Pgqueuer(server) if peer == "pgqueuer" else systems.Procrastinate(server)
    try:
        system.reset()
    finally:
        system.close()


def _paired(samples: dict[tuple[int, str], list[float]], k: int, a: str, b: str) -> float:
    pairs = list(zip(samples.get((k, a), []), samples.get((k, b), []), strict=False))
    if not pairs:
        return float("nan")
    return statistics.median(x / y for x, y in pairs if y)


def table(samples: dict[tuple[int, str], list[float]], notes: list[str], rounds: int,
          seconds: float) -> Table:
    ks = sorted({k for k, _ in samples})
    variants = list(dict.fromkeys(v for _, v in samples))
    result = Table(
        "Concurrent enqueue: K processes, one job per call (jobs/s, sum over K)",
        ["K", "call", "jobs/s", "spread", "vs no wake-up", "vs psycopg INSERT"])
    for k in ks:
        for variant in variants:
            values = samples.get((k, variant))
            if not values:
                continue
            spread = f"{min(values):,.0f}-{max(values):,.0f}" if len(values) > 1 else ""
            result.rows.append([
                k, variant, statistics.median(values), spread,
                f"{_paired(samples, k, variant, NO_WAKE):.2f}x",
                f"{_paired(samples, k, variant, BARE):.2f}x"])
    targets = []
    for k, floor in ((8, 0.9), (32, 0.85)):
        if (k, PGTASKQ) in samples:
            value = _paired(samples, k, PGTASKQ, NO_WAKE)
            targets.append(f"K={k}: {value:.2f}x of no wake-up (target {floor}x: "
                           f"{'met' if value >= floor else 'MISSED'})")
    if (32, PGTASKQ) in samples:
        value = _paired(samples, 32, PGTASKQ, BARE)
        targets.append(f"K=32: {value:.2f}x of a bare psycopg INSERT (target 0.6x: "
                       f"{'met' if value >= 0.6 else 'MISSED'})")
    result.notes.append("targets (issue 14): " + "; ".join(targets))
    result.notes.append(
        f"median of {rounds} interleaved rounds of {seconds:g} s per figure; ratios are "
        "medians of per-round ratios; tables truncated and a CHECKPOINT before each figure")
    result.notes.append(
        "`a worker waiting`: one registered worker waits, so every enqueue notifies, as "
        "every enqueue did before schema version 9; `no wake-up`: the same call for a job "
        "due in an hour; PgBouncer: transaction mode, "
        f"default_pool_size {BOUNCER_POOL}, `prepare=False`")
    result.notes.extend(notes)
    return result


DESIGN_NOTES = """The design candidates of issue 14, each a row above:

- *always notify* (every enqueue before schema version 9): `pgtaskq enqueue(), a worker
  waiting`, and `psycopg INSERT + NOTIFY` without pgtaskq;
- *notify from a transaction of its own after the commit*: `psycopg INSERT, then NOTIFY in
  its own transaction`. The notifying transactions still take the same lock and flush a
  commit record each, and a `conn=` enqueue cannot use it (pgtaskq does not commit the
  caller's transaction);
- *coalesce per process*: nothing to coalesce when each process has one enqueue in flight
  (a web request), as here; not built;
- *notify only when a worker waits* (built): `pgtaskq enqueue()`. Nobody waits here, as
  when every worker is busy or none runs, so no enqueue notifies; its cost over the
  same call without a wake-up is one read of the wake gate (schema version 11, a sequence
  read without a snapshot). Before the gate it was the `wake_wanted()` call (one PL/pgSQL
  call reading the small `workers` table, ~18 us of server time a call: 0.87x at K=8).
  While a worker does wait, enqueues notify as before: then the workers keep up, and a
  wake-up is what picks the job up in ~1 ms."""


def machine_note(server: str) -> str:
    info = machine_info(server)
    pg = info["postgresql"]
    return (f"machine: {info['cpu']}, {info['cores']} cores, shared with other jobs (load "
            f"average at the end {info['load_average']}); PostgreSQL {pg['server_version']}"
            f", fsync {pg['fsync']}, synchronous_commit {pg['synchronous_commit']}, "
            f"autovacuum {pg['autovacuum']}")


def scenario_concurrent_enqueue(ctx: Any) -> tuple[Table, dict]:
    rounds = 1 if ctx.quick else max(2, ctx.repeat)
    seconds = 2.0 if ctx.quick else 4.0
    samples, notes = run(ctx.server, rounds=rounds, seconds=seconds)
    raw = {f"{k}:{variant}": values for (k, variant), values in samples.items()}
    result = table(samples, notes, rounds, seconds)
    result.notes.append(machine_note(ctx.server))
    result.appendix = DESIGN_NOTES
    return result, {"samples": raw}


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.bench_concurrent_enqueue [--rounds N] [--seconds S]``: print
    the table and write its section of RESULTS.md (nothing else there is touched)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    server = server_dsn()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    samples, notes = run(server, rounds=args.rounds, seconds=args.seconds)
    result = table(samples, notes, args.rounds, args.seconds)
    result.notes.append(
        f"`python -m benchmarks.bench_concurrent_enqueue --rounds {args.rounds} --seconds "
        f"{args.seconds:g}`, started {started}, load average {load:.2f} at the start")
    result.notes.append(machine_note(server))
    result.appendix = DESIGN_NOTES
    print(result.text(), flush=True)
    if not args.no_write:
        write_section("bench:concurrent_enqueue", result.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
