"""``pgtaskq metrics``: a real exporter process scraped over HTTP, parsed with
prometheus_client's own parser, beside a real worker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from worker_helpers import FAST, create_runs_table

from pgtaskq.testing import wait_until

prometheus_client = pytest.importorskip(
    "prometheus_client", reason="pip install 'pgtaskq[prometheus]' (or the dev extra)")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from pgtaskq.operations.metrics import RollupTotals, histogram_buckets  # noqa: E402


class Exporter:
    def __init__(self, dsn: str, schema: str, tmp_path: Path) -> None:
        self.log = tmp_path / "metrics.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pgtaskq", "--dsn", dsn, "--schema", schema,
                 "metrics", "--port", "0"], stdout=out, stderr=subprocess.STDOUT)
        found = wait_until(lambda: re.search(r"http://\S+/metrics", self.log.read_text())
                           or self.process.poll() is not None, 15, what="exporter started")
        assert self.process.poll() is None, self.log.read_text()
        self.url = found.group(0)

    def scrape(self) -> dict[tuple[str, tuple], float]:
        with urllib.request.urlopen(self.url, timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples


@pytest.fixture
def exporter(pgtaskq_dsn, tq, tmp_path):
    started = Exporter(pgtaskq_dsn, tq.schema, tmp_path)
    yield started
    if started.process.poll() is None:
        started.process.kill()
        started.process.wait(10)


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_scrape_shows_queued_counts_per_queue_and_finished_counters(
        tq, db, exporter, worker_process) -> None:
    create_runs_table(db, tq.schema)
    tq.enqueue_many("noop", [{"queue": "mail"} for _ in range(3)])
    tq.enqueue_many("noop", [{"queue": "reports"} for _ in range(2)])
    tq.enqueue("noop", queue="mail", delay=3600)
    first = exporter.scrape()
    assert value(first, "pgtaskq_up") == 1
    assert value(first, "pgtaskq_jobs_ready", queue="mail", task="noop") == 3
    assert value(first, "pgtaskq_jobs_ready", queue="reports", task="noop") == 2
    assert value(first, "pgtaskq_jobs_scheduled", queue="mail", task="noop") == 1
    assert value(first, "pgtaskq_workers_alive") == 0
    assert value(first, "pgtaskq_oldest_ready_job_age_seconds", queue="mail") >= 0

    ok = [tq.enqueue("noop", args=[n]) for n in range(4)]
    bad = tq.enqueue("fail", max_attempts=2)
    worker = worker_process("apps.basic:tq", *FAST)
    worker.wait_ready()
    wait_until(lambda: all(tq.get_job(i).status == "succeeded" for i in ok)
               and tq.get_job(bad).status == "failed", 30, what="jobs done")

    def counted() -> dict:
        samples = exporter.scrape()
        done = samples.get(("pgtaskq_jobs_finished_total",
                            (("queue", "default"), ("status", "succeeded"), ("task", "noop"))))
        return samples if done == 4 else {}

    after = wait_until(counted, 15, what="succeeded counter at 4")
    assert value(after, "pgtaskq_jobs_finished_total", queue="default", task="fail",
                 status="failed") == 1
    assert value(after, "pgtaskq_jobs_retried_total", queue="default", task="fail") == 1
    assert value(after, "pgtaskq_job_run_seconds_count", queue="default", task="noop") == 4
    assert value(after, "pgtaskq_job_run_seconds_bucket", queue="default", task="noop",
                 le="+Inf") == 4
    assert value(after, "pgtaskq_job_wait_seconds_count", queue="default", task="fail") == 2
    assert value(after, "pgtaskq_workers_alive") == 1
    assert value(after, "pgtaskq_jobs_ready", queue="mail", task="noop") == 0  # all ran
    assert worker.stop() == 0

    exporter.process.send_signal(signal.SIGTERM)
    assert exporter.process.wait(10) == 0


def test_a_schema_that_cannot_be_read_is_up_0_not_an_error(tq, exporter) -> None:
    assert value(exporter.scrape(), "pgtaskq_up") == 1
    tq.uninstall()
    try:
        down = exporter.scrape()
        assert value(down, "pgtaskq_up") == 0
        assert not any(name.startswith("pgtaskq_jobs") for name, _ in down)
    finally:
        tq.install()
    assert value(exporter.scrape(), "pgtaskq_up") == 1


def test_counters_never_go_down_when_old_rollups_are_pruned(tq, db) -> None:
    def add_rollup(minutes_ago: int, succeeded: int, worker_id: int = 1) -> None:
        db.execute(
            f'INSERT INTO "{tq.schema}".stats_minute (minute, queue, task, worker_id, '
            "succeeded, run_ms_histogram) VALUES (date_trunc('minute', now()) - "
            "make_interval(mins => %s), 'q', 't', %s, %s, %s)",
            (minutes_ago, worker_id, succeeded, [0] * 8 + [succeeded]))

    totals = RollupTotals()
    with psycopg.connect(db.info.dsn, autocommit=True) as conn:
        minute = conn.execute("SELECT date_trunc('minute', now())").fetchone()[0]
        totals.folded_until = minute - timedelta(minutes=10)  # "started 10 minutes ago"
        add_rollup(20, 100)  # before the exporter started: not counted
        add_rollup(5, 7)  # a closed minute
        add_rollup(0, 2)  # the open minute
        first = totals.read(conn, tq.schema)[("q", "t")]
        assert (first.succeeded, sum(first.run)) == (9, 9)
        db.execute(f'DELETE FROM "{tq.schema}".stats_minute WHERE minute < now() - '
                   "interval '3 minutes'")  # the pruner's retention, made short
        add_rollup(0, 1, worker_id=2)  # another worker's row of the open minute
        second = totals.read(conn, tq.schema)[("q", "t")]
        assert (second.succeeded, sum(second.run)) == (10, 10)


def test_histogram_buckets_are_cumulative_and_in_seconds() -> None:
    counts = [0] * 64
    counts[8] = 3  # (0.707 ms, 1 ms]
    counts[20] = 1  # (45 ms, 64 ms]
    buckets, total = histogram_buckets(counts)
    as_dict = dict(buckets)
    assert as_dict["0.001"] == 3 and as_dict["0.016"] == 3 and as_dict["0.064"] == 4
    assert as_dict["+Inf"] == 4
    assert [b[0] for b in buckets][-1] == "+Inf"
    assert list(as_dict.values()) == sorted(as_dict.values())
    assert 0.002 < total < 0.07


def test_metrics_without_prometheus_client_says_which_extra(pgtaskq_dsn, tq) -> None:
    code = ("import sys; sys.modules['prometheus_client'] = None; "
            "from pgtaskq.cli import main; main()")
    result = subprocess.run(
        [sys.executable, "-c", code, "--dsn", pgtaskq_dsn, "--schema", tq.schema,
         "metrics"], capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 1
    assert "pip install 'pgtaskq[prometheus]'" in result.stderr
