"""Prometheus metrics of a pgtaskq schema, read at scrape time (``pgtaskq metrics``).

Nothing is counted in the worker's hot path for this: gauges come from the same reads as
``pgtaskq stats`` (``pgtaskq.operations.stats.collect``: rollups, partial indexes, a block
sample on a huge ``jobs`` table), so a scrape costs what one ``stats`` frame costs at any
queue size.

Counters and histograms must only grow, but the rollups are per minute and pruned after
days. :class:`RollupTotals` therefore keeps its own running totals from the moment the
exporter started: a minute is added once it is closed (two minutes old: no completer
writes into it any more), and the minutes still open are re-read and added on top at every
scrape. An exporter restart starts the counters from zero again, which Prometheus'
``rate()`` and ``increase()`` treat as the reset it is.

Histogram buckets are the rollups' own latency buckets, one in four of them (upper bounds
1/16 ms, 1/4 ms, 1 ms, 4 ms, ... 18.6 h), so the counts per ``le`` are exact; ``_sum`` is
estimated from each bucket's geometric middle (the rollups keep no sums).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from pgtaskq import histogram
from pgtaskq.errors import first_line
from pgtaskq.operations import stats
from pgtaskq.sql import metrics as metrics_sql
from pgtaskq.sql import render

CLOSED_AFTER = timedelta(minutes=2)
"""A rollup minute this old no longer changes (a completer writes the minute its
transaction started in, and commits within seconds)."""

BUCKET_STEP = 4
"""Every fourth rollup bucket bound is a Prometheus ``le``: a factor of 4 between them."""

LE_INDEXES = list(range(0, histogram.BUCKETS - 1, BUCKET_STEP))


@dataclass
class Totals:
    """Running totals of one (queue, task) since the exporter started."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    wait: list[int] = field(default_factory=list)
    run: list[int] = field(default_factory=list)

    def add(self, other: Totals) -> None:
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.retried += other.retried
        self.cancelled += other.cancelled
        histogram.add(self.wait, other.wait)
        histogram.add(self.run, other.run)

    def copy(self) -> Totals:
        return Totals(self.succeeded, self.failed, self.retried, self.cancelled,
                      list(self.wait), list(self.run))


class RollupTotals:
    """Monotonic totals from the per-minute rollups (closed minutes read once)."""

    def __init__(self) -> None:
        self.folded_until: datetime | None = None
        self.closed: dict[tuple[str, str], Totals] = {}

    def read(self, conn: psycopg.Connection, schema: str) -> dict[tuple[str, str], Totals]:
        minute = conn.execute(metrics_sql.MINUTE).fetchone()[0]  # type: ignore[index]
        if self.folded_until is None:
            self.folded_until = minute
        close_before = minute - CLOSED_AFTER
        if close_before > self.folded_until:
            for key, totals in _totals(conn, schema, self.folded_until, close_before):
                self.closed.setdefault(key, Totals()).add(totals)
            self.folded_until = close_before
        current = {key: totals.copy() for key, totals in self.closed.items()}
        for key, totals in _totals(conn, schema, self.folded_until, None):
            current.setdefault(key, Totals()).add(totals)
        return current


def _totals(conn: psycopg.Connection, schema: str, start: datetime,
            end: datetime | None) -> Iterator[tuple[tuple[str, str], Totals]]:
    rows = conn.execute(render(schema, metrics_sql.ROLLUP_TOTALS),
                        {"from": start, "to": end}, prepare=False).fetchall()
    for queue, task, succeeded, failed, retried, cancelled, wait, run in rows:
        yield (queue, task), Totals(int(succeeded), int(failed), int(retried),
                                    int(cancelled), list(wait or []), list(run or []))


class PgtaskqCollector:
    """A prometheus_client collector reading one schema on one autocommit connection.

    Scrapes may come concurrently (the HTTP server is threaded): one reads at a time. A
    database that cannot be read gives ``pgtaskq_up 0`` and no other sample, never an
    HTTP error, so Prometheus records the outage rather than a failed scrape.
    """

    def __init__(self, connect: Any, schema: str) -> None:
        self._connect = connect
        self._schema = schema
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._totals = RollupTotals()
        self.last_error: str | None = None

    def describe(self) -> list[Metric]:
        return []  # metrics depend on the data: collected at scrape time only

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            began = time.perf_counter()
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = self._connect()
                snapshot = stats.collect(self._conn, self._schema, failures=0)
                totals = self._totals.read(self._conn, self._schema)
            except Exception as exc:  # database down, schema gone: say so, keep serving
                self.last_error = first_line(exc)
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                yield GaugeMetricFamily("pgtaskq_up", "1 when pgtaskq's tables could be read",
                                        value=0)
                return
            self.last_error = None
            elapsed = time.perf_counter() - began
        yield GaugeMetricFamily("pgtaskq_up", "1 when pgtaskq's tables could be read", value=1)
        yield from _live_metrics(snapshot)
        yield from _total_metrics(totals)
        yield GaugeMetricFamily("pgtaskq_scrape_duration_seconds",
                                "Time this scrape spent reading the database", value=elapsed)


def _live_metrics(snapshot: stats.Snapshot) -> Iterator[Metric]:
    labels = ["queue", "task"]
    families = {
        "ready": GaugeMetricFamily("pgtaskq_jobs_ready",
                                   "Queued jobs whose run_at has passed", labels=labels),
        "scheduled": GaugeMetricFamily("pgtaskq_jobs_scheduled",
                                       "Queued jobs whose run_at is in the future",
                                       labels=labels),
        "running": GaugeMetricFamily("pgtaskq_jobs_running", "Jobs leased by a worker",
                                     labels=labels),
    }
    for row in snapshot.tasks:
        values = [row.queue or "", row.task or ""]
        families["ready"].add_metric(values, row.ready)
        families["scheduled"].add_metric(values, row.scheduled)
        families["running"].add_metric(values, row.running)
    yield from families.values()
    yield GaugeMetricFamily(
        "pgtaskq_jobs_counts_estimated",
        "1 when ready/scheduled counts are estimated from a sample (jobs table too large to "
        "count per scrape)", value=1 if snapshot.estimated else 0)
    oldest = GaugeMetricFamily("pgtaskq_oldest_ready_job_age_seconds",
                               "How long the oldest ready job of the queue has waited "
                               "(0 when none is ready)", labels=["queue"])
    for row in snapshot.queues:
        oldest.add_metric([row.queue or ""], row.oldest_ready_age or 0.0)
    yield oldest
    alive = sum(1 for w in snapshot.workers if w.status == "alive")
    lost = sum(1 for w in snapshot.workers if w.status == "lost")
    yield GaugeMetricFamily("pgtaskq_workers_alive", "Workers whose heartbeat is recent",
                            value=alive)
    yield GaugeMetricFamily("pgtaskq_workers_lost",
                            "Registered workers silent for several heartbeat intervals",
                            value=lost)
    slots = GaugeMetricFamily("pgtaskq_worker_slots", "Slots of live workers by state",
                              labels=["state"])
    live = [w for w in snapshot.workers if w.status == "alive"]
    slots.add_metric(["total"], sum(w.concurrency for w in live))
    slots.add_metric(["busy"], sum(w.busy for w in live))
    slots.add_metric(["stuck"], sum(w.stuck for w in live))
    yield slots


def _total_metrics(totals: dict[tuple[str, str], Totals]) -> Iterator[Metric]:
    finished = CounterMetricFamily(
        "pgtaskq_jobs_finished", "Jobs that reached a final status since the exporter "
        "started", labels=["queue", "task", "status"])
    retried = CounterMetricFamily(
        "pgtaskq_jobs_retried", "Failed attempts whose job was queued again since the "
        "exporter started", labels=["queue", "task"])
    wait = HistogramMetricFamily(
        "pgtaskq_job_wait_seconds", "Time from run_at until a worker leased the job",
        labels=["queue", "task"])
    run = HistogramMetricFamily(
        "pgtaskq_job_run_seconds", "Time the task function ran, per attempt",
        labels=["queue", "task"])
    for (queue, task), t in sorted(totals.items()):
        finished.add_metric([queue, task, "succeeded"], t.succeeded)
        finished.add_metric([queue, task, "failed"], t.failed)
        finished.add_metric([queue, task, "cancelled"], t.cancelled)
        retried.add_metric([queue, task], t.retried)
        for family, counts in ((wait, t.wait), (run, t.run)):
            buckets, total_seconds = histogram_buckets(counts)
            family.add_metric([queue, task], buckets, total_seconds)
    yield from (finished, retried, wait, run)


def histogram_buckets(counts: list[int]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative ``(le, count)`` pairs in seconds from rollup bucket counts, and the
    estimated sum of the values in seconds."""
    cumulative = 0
    pairs: list[tuple[str, float]] = []
    total_ms = 0.0
    indexes = iter(LE_INDEXES)
    next_le = next(indexes, None)
    for index in range(histogram.BUCKETS):
        n = counts[index] if index < len(counts) else 0
        cumulative += n
        if n:
            low = histogram.upper(index - 1) if index else histogram.upper(0) / 2
            total_ms += n * (low * histogram.upper(index)) ** 0.5
        if index == next_le:
            pairs.append((_le(histogram.upper(index) / 1000), float(cumulative)))
            next_le = next(indexes, None)
    pairs.append(("+Inf", float(cumulative)))
    return pairs, total_ms / 1000


def _le(seconds: float) -> str:
    return f"{seconds:.9g}"
