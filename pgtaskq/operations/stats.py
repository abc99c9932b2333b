"""What ``pgtaskq stats`` shows, read cheaply enough to redraw every second.

Finished work (succeeded, failed, retried, cancelled per window, throughput, latency
percentiles, the sparkline) comes from the per-minute rollups the completers write, never
from counting ``job_history``. Live work (ready, scheduled, running) is counted exactly
while the ``jobs`` table is small; beyond ``EXACT_MAX_PAGES`` pages the queued figures are
estimated from a block sample (``TABLESAMPLE SYSTEM``) and marked as estimates, so the
dashboard stays in milliseconds at a million queued jobs. The oldest ready job's age per
queue stays exact at any size (a loose index scan, ``sql/stats.py``). Running jobs are
always exact (at most the workers' total concurrency, through a partial index).

The CLI renders a :class:`Snapshot`; ``Snapshot.to_json()`` is the ``--json`` form.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from pgtaskq import defaults, histogram
from pgtaskq.sql import queues as queue_sql
from pgtaskq.sql import registry as registry_sql
from pgtaskq.sql import render
from pgtaskq.sql import stats as stats_sql

WINDOWS = ("1m", "5m", "1h")
"""Rollup windows: the current minute so far plus 1, 5 or 60 whole minutes before it."""

PERCENTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
"""Latency percentiles shown, over the ``5m`` window."""

EXACT_MAX_PAGES = 1000
"""Up to this many 8 kB pages (~50k jobs) ``jobs`` is counted exactly (~25 ms at most)."""

SAMPLE_PAGES = 300
"""Pages read for the estimate when ``jobs`` is larger than that."""


@dataclass
class Row:
    """Figures of one (queue, task), of one queue (``task`` None), or of everything."""

    queue: str | None
    task: str | None
    ready: int = 0
    scheduled: int = 0
    running: int = 0
    succeeded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WINDOWS, 0))
    failed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WINDOWS, 0))
    retried_1h: int = 0
    cancelled_1h: int = 0
    finished_1m: int = 0
    """Attempts that ended (any outcome) in the ``1m`` window, and queued jobs cancelled
    in it: the throughput's numerator."""
    throughput: float = 0.0
    oldest_ready_at: datetime | None = None
    oldest_ready_age: float | None = None
    estimated: bool = False
    """Ready/scheduled (and the per-task oldest age) come from a sample."""
    wait_histogram: list[int] = field(default_factory=list, repr=False)
    run_histogram: list[int] = field(default_factory=list, repr=False)
    series: list[int] = field(default_factory=list)
    """Attempts finished per minute over the last hour, oldest first (queue rows only)."""
    paused: bool = False
    """Workers do not claim this queue's jobs (``TaskQueue.pause``)."""
    no_worker: bool = False
    """No live worker registers this task: its due jobs wait, parked (task rows only)."""

    def percentiles(self, which: str) -> dict[str, float | None]:
        counts = self.wait_histogram if which == "wait" else self.run_histogram
        return {name: histogram.percentile(counts, q) for name, q in PERCENTILES.items()}

    def absorb(self, other: Row) -> None:
        """Add ``other``'s figures into this one (for queue and total rows)."""
        self.ready += other.ready
        self.scheduled += other.scheduled
        self.running += other.running
        for window in WINDOWS:
            self.succeeded[window] += other.succeeded[window]
            self.failed[window] += other.failed[window]
        self.retried_1h += other.retried_1h
        self.cancelled_1h += other.cancelled_1h
        self.finished_1m += other.finished_1m
        self.estimated = self.estimated or other.estimated
        histogram.add(self.wait_histogram, other.wait_histogram)
        histogram.add(self.run_histogram, other.run_histogram)
        if other.oldest_ready_at is not None and (
                self.oldest_ready_at is None or other.oldest_ready_at < self.oldest_ready_at):
            self.oldest_ready_at = other.oldest_ready_at

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "queue": self.queue, "task": self.task, "ready": self.ready,
            "scheduled": self.scheduled, "running": self.running,
            "succeeded": dict(self.succeeded), "failed": dict(self.failed),
            "retried": {"1h": self.retried_1h}, "cancelled": {"1h": self.cancelled_1h},
            "throughput_per_s": round(self.throughput, 3),
            "wait_ms": _rounded(self.percentiles("wait")),
            "run_ms": _rounded(self.percentiles("run")),
            "oldest_ready_age_s": None if self.oldest_ready_age is None
            else round(self.oldest_ready_age, 3),
            "estimated": self.estimated,
        }
        if self.queue is not None:
            data["paused"] = self.paused
        if self.task is not None:
            data["no_worker"] = self.no_worker
        if self.task is None and self.queue is not None:
            data["finished_per_minute"] = list(self.series)
        return data


@dataclass
class WorkerInfo:
    id: int
    host: str
    pid: int
    queues: list[str] | None
    concurrency: int
    busy: int
    stuck: int
    started_at: datetime
    heartbeat_age: float
    status: str  # alive | lost | stopped
    finished_1m: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "host": self.host, "pid": self.pid, "queues": self.queues,
                "concurrency": self.concurrency, "busy_slots": self.busy,
                "stuck_slots": self.stuck, "started_at": self.started_at.isoformat(),
                "last_heartbeat_age_s": round(self.heartbeat_age, 3),
                "status": self.status, "finished_1m": self.finished_1m}


@dataclass
class Failure:
    job_id: int
    task: str
    queue: str
    attempts: int
    max_attempts: int
    finished_at: datetime
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "task": self.task, "queue": self.queue,
                "attempts": self.attempts, "max_attempts": self.max_attempts,
                "finished_at": self.finished_at.isoformat(), "error": self.error}


@dataclass
class Snapshot:
    """Everything ``pgtaskq stats`` shows, as of ``at``."""

    at: datetime
    window_1m_seconds: float
    estimated: bool
    tasks: list[Row]
    queues: list[Row]
    total: Row
    workers: list[WorkerInfo]
    failures: list[Failure]
    elapsed_ms: float
    paused: dict[str, datetime] = field(default_factory=dict)
    """Paused queues and when each was paused."""
    no_worker: dict[str, int] = field(default_factory=dict)
    """Tasks no live worker registers -> their due jobs, which wait parked (issue 12)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "generated_at": self.at.isoformat(),
            "elapsed_ms": round(self.elapsed_ms, 1),
            "estimated": self.estimated,
            "windows": {"1m": "current minute + 1 before", "5m": "current minute + 5 before",
                        "1h": "current minute + 60 before",
                        "percentiles": "5m", "throughput": "1m"},
            "tasks": [row.to_json() for row in self.tasks],
            "queues": [row.to_json() for row in self.queues],
            "total": self.total.to_json(),
            "workers": [w.to_json() for w in self.workers],
            "recent_failures": [f.to_json() for f in self.failures],
            "paused_queues": {q: at.isoformat() for q, at in self.paused.items()},
            "tasks_without_worker": dict(self.no_worker),
        }


def collect(conn: psycopg.Connection, schema: str, *, queue: str | None = None,
            task: str | None = None, failures: int = 10) -> Snapshot:
    """Read a :class:`Snapshot` on ``conn`` (autocommit: no transaction stays open)."""
    began = time.perf_counter()

    def run(template: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        # Never prepared: after a few executions PostgreSQL may switch a prepared
        # statement to a generic plan that ignores the time bounds' values (measured:
        # 3x slower from the 11th frame of --watch on). Planning costs well under 1 ms.
        return conn.execute(render(schema, template), params, prepare=False).fetchall()

    now, minute, pages, reltuples, relpages = run(stats_sql.CLOCK,
                                                  {"jobs": f'"{schema}".jobs'})[0]
    params = {"now": now, "minute": minute, "queue": queue, "task": task,
              "limit": failures, "lost_beats": defaults.WORKER_LOST_AFTER_BEATS,
              "lost_min": defaults.WORKER_LOST_AFTER_MIN}
    rows: dict[tuple[str, str], Row] = {}

    def row(key: tuple[str, str]) -> Row:
        if key not in rows:
            rows[key] = Row(key[0], key[1])
        return rows[key]

    estimated = pages > EXACT_MAX_PAGES
    if estimated:
        running_total = 0
        for q, t, running in run(stats_sql.RUNNING, params):
            row((q, t)).running = running
            running_total += running
        percent = min(100.0, 100.0 * SAMPLE_PAGES / pages)
        sample = run(stats_sql.LIVE_SAMPLE, {**params, "percent": percent})
        scale = _sample_scale(sample, percent, pages, reltuples, relpages, running_total,
                              filtered=queue is not None or task is not None)
        for q, t, ready, scheduled, oldest in sample:
            r = row((q, t))
            r.ready, r.scheduled = round(ready * scale), round(scheduled * scale)
            r.oldest_ready_at = oldest
        for r in rows.values():
            r.estimated = True
    else:
        for q, t, ready, scheduled, running, oldest in run(stats_sql.LIVE_EXACT, params):
            r = row((q, t))
            r.ready, r.scheduled, r.running, r.oldest_ready_at = \
                ready, scheduled, running, oldest

    for q, t, *counts in run(stats_sql.ROLLUP_COUNTS, params):
        r = row((q, t))
        r.succeeded = dict(zip(WINDOWS, map(int, counts[0:3]), strict=True))
        r.failed = dict(zip(WINDOWS, map(int, counts[3:6]), strict=True))
        r.retried_1h, r.cancelled_1h, r.finished_1m = map(int, counts[6:9])
    for q, t, wait, run_ms in run(stats_sql.ROLLUP_HISTOGRAMS, params):
        r = row((q, t))
        histogram.add(r.wait_histogram, wait)
        histogram.add(r.run_histogram, run_ms)

    window = 60.0 + (now - minute).total_seconds()
    tasks = [rows[key] for key in sorted(rows)]
    queue_rows: dict[str, Row] = {}
    total = Row(None, None)
    for r in tasks:
        queue_rows.setdefault(r.queue or "", Row(r.queue, None)).absorb(r)
        total.absorb(r)
    if estimated and task is None:
        # The sample may miss a queue's oldest job; the index knows it exactly.
        for q, oldest in run(stats_sql.OLDEST_READY_BY_QUEUE, params):
            if queue is None or q == queue:
                queue_row = queue_rows.setdefault(q, Row(q, None))
                queue_row.oldest_ready_at, queue_row.estimated = oldest, True
        exact = [r.oldest_ready_at for r in queue_rows.values() if r.oldest_ready_at]
        total.oldest_ready_at = min(exact) if exact else None
    for q, at, count in run(stats_sql.ROLLUP_SERIES, params):
        series = queue_rows.setdefault(q, Row(q, None)).series
        if not series:
            series.extend([0] * 60)
        index = 59 - int((minute - at).total_seconds() // 60)
        if 0 <= index < 60:
            series[index] += int(count)
    paused = {q: at for q, at in run(queue_sql.LIST_PAUSED, {})
              if queue is None or q == queue}
    for q in paused:  # listed even when empty, so a dashboard can resume it
        queue_rows.setdefault(q, Row(q, None))
    for r in [*tasks, *queue_rows.values()]:
        r.paused = r.queue in paused
    no_worker = {t: int(count) for t, count, _ in run(registry_sql.WAITING_FOR_A_WORKER, params)
                 if task is None or t == task}
    for r in tasks:
        r.no_worker = r.task in no_worker
    queues = [queue_rows[q] for q in sorted(queue_rows)]
    for r in [*tasks, *queues, total]:
        r.throughput = r.finished_1m / window
        if r.oldest_ready_at is not None:
            r.oldest_ready_age = max(0.0, (now - r.oldest_ready_at).total_seconds())
        if r.task is None and r.queue is not None and not r.series:
            r.series = [0] * 60

    by_worker = dict(run(stats_sql.ROLLUP_BY_WORKER, params))
    workers = [
        WorkerInfo(id=w[0], host=w[1], pid=w[2], queues=w[3], concurrency=w[4], busy=w[5],
                   stuck=w[6], started_at=w[7], heartbeat_age=max(0.0, w[10]),
                   status="stopped" if w[9] is not None else ("lost" if w[11] else "alive"),
                   finished_1m=int(by_worker.get(w[0], 0)))
        for w in run(stats_sql.WORKERS, params)
    ]
    failed = [Failure(f[0], f[1], f[2], f[3], f[4], f[5], error_summary(f[6]))
              for f in run(stats_sql.RECENT_FAILURES, params)] if failures > 0 else []
    return Snapshot(at=now, window_1m_seconds=window, estimated=estimated, tasks=tasks,
                    queues=queues, total=total, workers=workers, failures=failed,
                    elapsed_ms=(time.perf_counter() - began) * 1000, paused=paused,
                    no_worker=no_worker)


def _sample_scale(sample: list[tuple[Any, ...]], percent: float, pages: int,
                  reltuples: float, relpages: int, running: int, filtered: bool) -> float:
    """Queued jobs one sampled queued row stands for.

    ``SYSTEM`` sampling takes each page with probability ``percent``, so the number of
    pages actually read varies by several percent from run to run. When the table was
    analyzed, the planner's own estimate of its rows now (rows per page at the last
    ANALYZE times today's pages) minus the exact running count is a steadier total, and
    the sample only splits it between queues and tasks. Without statistics, or when a
    filter hides part of the sample's rows, scale by the sampling rate.
    """
    if percent >= 100.0:  # the "sample" was the whole table
        return 1.0
    sampled = sum(ready + scheduled for _, _, ready, scheduled, _ in sample)
    if filtered or sampled == 0 or reltuples <= 0 or relpages <= 0:
        return 100.0 / percent
    queued = max(0.0, reltuples / relpages * pages - running)
    return queued / sampled


def error_summary(text: str | None) -> str:
    """The line of an error worth a glance: a traceback's last line (the exception), or
    the first line of a plain message."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def _rounded(values: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else round(v, 3) for k, v in values.items()}
