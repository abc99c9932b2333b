"""Rollups and ``pgtaskq stats``: real workers, real PostgreSQL, the CLI as users run it.

Known numbers of successes, failures, retries and cancellations go through a worker
subprocess; the rollups, ``stats.collect`` and ``pgtaskq stats --json`` must show exactly
those. ``--watch`` is driven in a pseudo-terminal and stopped with SIGINT.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from worker_helpers import FAST, runs, status_of

from pgtaskq import histogram
from pgtaskq.cli import cli
from pgtaskq.operations import stats
from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql
from pgtaskq.testing import wait_until
from pgtaskq.worker import rollup
from pgtaskq.worker.outcome import Outcome

APP = "apps.basic:tq"
TESTS_DIR = str(Path(__file__).resolve().parent)



def stats_json(dsn, schema, *args):
    result = CliRunner().invoke(cli, ["--dsn", dsn, "--schema", schema, "stats", "--json",
                                      *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def by_task(snapshot):
    return {row["task"]: row for row in snapshot["tasks"]}



def test_rollups_match_what_happened(tq, db, pgtaskq_dsn, runs_table, worker_process):
    worker = worker_process(APP, "-c", "4", *FAST)
    worker.wait_ready()
    ok = tq.enqueue_many("noop", [{"args": [n]} for n in range(20)])
    failing = tq.enqueue_many("fail", [{"max_attempts": 2} for _ in range(4)])
    retried = tq.enqueue_many("retry_then_succeed", [{"args": [1]} for _ in range(3)])
    cancelled = tq.enqueue("cancellable", args=[30])
    wait_until(lambda: runs(db, tq.schema, "started"), 10, what="cancellable started")
    assert tq.cancel(cancelled)
    wait_until(lambda: all(status_of(tq, i) == "succeeded" for i in ok + retried)
               and all(status_of(tq, i) == "failed" for i in failing)
               and status_of(tq, cancelled) == "cancelled", 30, what="all jobs final")

    snapshot = stats_json(pgtaskq_dsn, tq.schema)
    tasks = by_task(snapshot)
    assert set(tasks) == {"noop", "fail", "retry_then_succeed", "cancellable"}
    for window in ("1m", "5m", "1h"):
        assert tasks["noop"]["succeeded"][window] == 20
        assert tasks["fail"]["failed"][window] == 4
        assert tasks["retry_then_succeed"]["succeeded"][window] == 3
        assert tasks["noop"]["failed"][window] == 0
    assert tasks["fail"]["retried"]["1h"] == 4  # first attempts, queued again
    assert tasks["retry_then_succeed"]["retried"]["1h"] == 3
    assert tasks["cancellable"]["cancelled"]["1h"] == 1
    assert tasks["noop"]["retried"]["1h"] == 0
    total = snapshot["total"]
    assert total["succeeded"]["1h"] == 23 and total["failed"]["1h"] == 4
    assert total["ready"] == total["running"] == total["scheduled"] == 0
    assert total["throughput_per_s"] > 0
    assert total["run_ms"]["p50"] is not None and total["wait_ms"]["p95"] is not None
    assert snapshot["estimated"] is False

    # One histogram entry per attempt that ended: 20 + 4*2 + 3*2 + 1.
    rows = db.execute(f'SELECT run_ms_histogram, wait_ms_histogram FROM "{tq.schema}"'
                      ".stats_minute").fetchall()
    assert sum(sum(r[0]) for r in rows) == sum(sum(r[1]) for r in rows) == 35
    assert tasks["cancellable"]["run_ms"]["p50"] > 0

    [queue] = snapshot["queues"]
    assert queue["queue"] == "default" and len(queue["finished_per_minute"]) == 60
    assert sum(queue["finished_per_minute"]) == 35
    [w] = snapshot["workers"]
    assert w["pid"] == worker.pid and w["status"] == "alive" and w["finished_1m"] == 35
    assert w["concurrency"] == 4
    failures = snapshot["recent_failures"]
    assert sorted(f["job_id"] for f in failures) == sorted(failing)
    assert all(f["error"] == "RuntimeError: boom" and f["attempts"] == 2 for f in failures)

    only = stats_json(pgtaskq_dsn, tq.schema, "--task", "fail")
    assert [r["task"] for r in only["tasks"]] == ["fail"]
    assert only["total"]["failed"]["1h"] == 4 and only["total"]["succeeded"]["1h"] == 0
    assert stats_json(pgtaskq_dsn, tq.schema, "--queue", "other")["tasks"] == []

    text = CliRunner().invoke(cli, ["--dsn", pgtaskq_dsn, "--schema", tq.schema, "stats"])
    assert text.exit_code == 0, text.output
    assert "TOTAL" in text.output and "RuntimeError: boom" in text.output
    assert "alive" in text.output and "finished per minute" in text.output
    assert worker.stop() == 0
    stopped = stats_json(pgtaskq_dsn, tq.schema)["workers"]
    assert [w["status"] for w in stopped] == ["stopped"]


def _running(db, schema, n, task="t", max_attempts=3, worker_id=1):
    return [r[0] for r in db.execute(
        f'INSERT INTO "{schema}".jobs (queue, task, status, attempts, max_attempts, '
        "worker_id, started_at, lease_expires_at) "
        "SELECT 'default', %s, 'running', 1, %s, %s, now(), now() + interval '1 minute' "
        "FROM generate_series(1, %s) RETURNING id",
        (task, max_attempts, worker_id, n)).fetchall()]


def _complete(db, schema, outcomes):
    db.execute(render(schema, worker_sql.COMPLETE), {
        "worker_id": 1, "ids": [o.job_id for o in outcomes],
        "attempts": [o.attempt for o in outcomes], "kinds": [o.kind for o in outcomes],
        "errors": [o.error for o in outcomes], "results": [None for _ in outcomes],
        "delays": [o.delay for o in outcomes], **rollup.params(outcomes),
        "backoff_base": 1.0, "backoff_cap": 2.0,
    })


def _rollup(db, schema):
    return db.execute(
        f'SELECT task, worker_id, succeeded, failed, retried, cancelled, wait_ms_histogram, '
        f'run_ms_histogram FROM "{schema}".stats_minute ORDER BY task, worker_id').fetchall()


def test_only_acknowledged_outcomes_count(tq, db):
    ids = _running(db, tq.schema, 4)
    out = [Outcome(ids[0], 1, "succeeded", queue="default", task="t", wait_ms=3,
                   run_ms=40, max_attempts=3),
           Outcome(ids[1], 1, "failed", error="x", queue="default", task="t", wait_ms=3,
                   run_ms=40, max_attempts=3),
           Outcome(ids[2], 7, "succeeded", queue="default", task="t", wait_ms=3,
                   run_ms=40, max_attempts=3)]  # stale: the job is at attempt 1
    _complete(db, tq.schema, out)
    [(task, worker, ok, failed, retried, cancelled, wait, run)] = _rollup(db, tq.schema)
    assert (task, worker) == ("t", 1)
    assert (ok, failed, retried, cancelled) == (1, 0, 1, 0)
    assert sum(run) == 2 and run[histogram.bucket(40)] == 2
    assert sum(wait) == 2 and wait[histogram.bucket(3)] == 2
    # All owned: the pre-aggregated path adds into the same row. (A job is recorded
    # cancelled only when its row says a cancel was requested.)
    db.execute(f'UPDATE "{tq.schema}".jobs SET cancel_requested = true WHERE id = %s',
               [ids[2]])
    _complete(db, tq.schema, [Outcome(ids[2], 1, "cancelled", queue="default", task="t",
                                      run_ms=1000, max_attempts=3),
                              Outcome(ids[3], 1, "retry", queue="default", task="t",
                                      max_attempts=1)])
    [(_, _, ok, failed, retried, cancelled, wait, run)] = _rollup(db, tq.schema)
    assert (ok, failed, retried, cancelled) == (1, 1, 1, 1)
    assert sum(run) == 4 and run[histogram.bucket(1000)] == 1
    # A duplicate acknowledgement of a finished job changes nothing.
    _complete(db, tq.schema, out[:1])
    assert _rollup(db, tq.schema)[0][2:6] == (1, 1, 1, 1)


def test_rescued_attempts_are_counted(tq, db):
    again = _running(db, tq.schema, 2, task="r", max_attempts=3, worker_id=9)
    given_up = _running(db, tq.schema, 1, task="r", max_attempts=1, worker_id=9)
    db.execute(f'UPDATE "{tq.schema}".jobs SET lease_expires_at = now() - interval \'1s\'')
    rows = db.execute(render(tq.schema, worker_sql.RESCUE),
                      {"limit": 100, "channel": tq.channel}).fetchall()
    assert sorted(r[1] for r in rows) == sorted(again + given_up)
    [(task, worker, ok, failed, retried, cancelled, _, _)] = _rollup(db, tq.schema)
    assert (task, worker, ok, failed, retried, cancelled) == ("r", 0, 0, 1, 2, 0)


def test_cancelled_queued_jobs_are_counted(tq, db, pgtaskq_dsn):
    ids = tq.enqueue_many("q", [{} for _ in range(3)])
    (running,) = _running(db, tq.schema, 1, task="q")
    assert [tq.cancel(i) for i in ids[:2]] == [True, True]
    assert tq.cancel(running) is True  # requested only: its worker will report the outcome
    assert tq.cancel(ids[0]) is False  # already cancelled: counted once
    [(task, worker, ok, failed, retried, cancelled, _, _)] = _rollup(db, tq.schema)
    assert (task, worker, ok, failed, retried, cancelled) == ("q", 0, 0, 0, 0, 2)
    assert by_task(stats_json(pgtaskq_dsn, tq.schema))["q"]["cancelled"] == {"1h": 2}


def test_stats_of_an_empty_queue_and_live_counts(tq, db, pgtaskq_dsn):
    empty = stats_json(pgtaskq_dsn, tq.schema)
    assert set(empty) >= {"generated_at", "elapsed_ms", "estimated", "tasks", "queues",
                          "total", "workers", "recent_failures"}
    assert empty["tasks"] == [] and empty["workers"] == []
    assert set(empty["total"]) >= {"ready", "scheduled", "running", "succeeded", "failed",
                                   "retried", "cancelled", "throughput_per_s", "wait_ms",
                                   "run_ms", "oldest_ready_age_s", "estimated"}
    tq.enqueue_many("a", [{"queue": "q1"}] * 3 + [{"queue": "q2", "delay": 600}] * 2)
    db.execute(f'UPDATE "{tq.schema}".jobs SET run_at = now() - interval \'90 seconds\' '
               "WHERE id = (SELECT min(id) FROM \"{0}\".jobs)".format(tq.schema))
    snap = stats_json(pgtaskq_dsn, tq.schema)
    rows = {(r["queue"], r["task"]): r for r in snap["tasks"]}
    assert rows[("q1", "a")]["ready"] == 3 and rows[("q2", "a")]["scheduled"] == 2
    assert 89 <= rows[("q1", "a")]["oldest_ready_age_s"] < 120
    assert rows[("q2", "a")]["oldest_ready_age_s"] is None
    assert snap["total"]["ready"] == 3 and snap["total"]["scheduled"] == 2


def test_large_table_is_estimated_and_says_so(tq, db, monkeypatch):
    db.execute(
        f'INSERT INTO "{tq.schema}".jobs (queue, task, max_attempts, run_at) '
        "SELECT 'q' || (g % 2), 'big', 3, now() - make_interval(secs => g) "
        "FROM generate_series(1, 5000) g")
    monkeypatch.setattr(stats, "EXACT_MAX_PAGES", 1)
    with tq.connect() as conn:
        snap = stats.collect(conn, tq.schema)
    assert snap.estimated and all(r.estimated for r in snap.tasks)
    # The table is smaller than SAMPLE_PAGES, so the "sample" reads it all.
    assert snap.total.ready == 5000
    ages = {q.queue: q.oldest_ready_age for q in snap.queues}
    assert 5000 <= ages["q0"] < 5100 and 4999 <= ages["q1"] < 5100
    text = CliRunner().invoke(cli, ["--dsn", tq.dsn, "--schema", tq.schema, "stats"])
    assert "~2,500" in text.output and "estimate" in text.output


def _as_from_a_shell() -> None:
    """In the child: SIGINT as an interactive shell leaves it. A test run started in the
    background (nohup, ``cmd &``) ignores SIGINT, and the child would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli_env(dsn, schema):
    return {**os.environ, "PGTASKQ_DSN": dsn, "PGTASKQ_SCHEMA": schema,
            "PYTHONPATH": os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("interrupt", ["SIGINT", "Ctrl-C"])
def test_watch_redraws_in_a_terminal_until_interrupted(tq, pgtaskq_dsn, interrupt):
    tq.enqueue("a")
    master, slave = pty.openpty()

    def controlling_terminal() -> None:  # in the child: a session whose terminal is the pty
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        _as_from_a_shell()

    process = subprocess.Popen(
        [sys.executable, "-m", "pgtaskq", "stats", "--watch", "0.2"],
        stdin=slave, stdout=slave, stderr=slave, env=_cli_env(pgtaskq_dsn, tq.schema),
        preexec_fn=controlling_terminal)
    os.close(slave)
    output = b""

    def read_some() -> bytes:
        nonlocal output
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            with contextlib.suppress(OSError):  # EIO once the child closed the terminal
                output += os.read(master, 65536)
        return output

    try:
        wait_until(lambda: read_some().count(b"\x1b[H") >= 2
                   and output.count(b"pgtaskq stats ") >= 2, 20, what="two frames")
        if interrupt == "SIGINT":
            process.send_signal(signal.SIGINT)
        else:
            os.write(master, b"\x03")  # the terminal driver turns it into SIGINT
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            read_some()
        assert process.wait(1) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    text = output.decode(errors="replace")
    assert "Traceback" not in text and "Aborted" not in text
    assert "TOTAL" in text and "NO LIVE WORKER" in text  # the one-screen view


def test_watch_without_a_terminal_appends_plain_frames(tq, pgtaskq_dsn):
    process = subprocess.Popen(
        [sys.executable, "-m", "pgtaskq", "stats", "--watch", "0.2", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_cli_env(pgtaskq_dsn, tq.schema),
        preexec_fn=_as_from_a_shell)
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert all(json.loads(line)["total"]["ready"] == 0 for line in lines)
    assert b"\x1b" not in b"".join(lines) + out and b"Traceback" not in err


def test_stats_user_errors_are_one_line(pgtaskq_dsn, schema_name):
    result = CliRunner().invoke(cli, ["--dsn", pgtaskq_dsn, "--schema", schema_name,
                                      "stats"])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert f"pgtaskq --schema {schema_name} install" in result.stderr


def test_watch_survives_a_killed_connection(tq, db, pgtaskq_dsn):
    process = subprocess.Popen(
        [sys.executable, "-m", "pgtaskq", "stats", "--watch", "0.2", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_cli_env(pgtaskq_dsn, tq.schema),
        preexec_fn=_as_from_a_shell)
    try:
        assert json.loads(process.stdout.readline())["total"]["ready"] == 0
        killed = db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s", (f"pgtaskq stats {process.pid}",)).fetchall()
        assert killed, "the dashboard's session was not found"
        tq.enqueue("a")
        # Frames resume on a new connection and see the new job.
        wait_until(lambda: json.loads(process.stdout.readline())["total"]["ready"] == 1, 10,
                   what="a frame after the reconnection")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert b"database unavailable, retrying" in err and b"Traceback" not in err


def test_a_worker_is_lost_after_three_of_its_own_heartbeat_intervals(tq, db, pgtaskq_dsn):
    db.execute(
        f'INSERT INTO "{tq.schema}".workers (host, pid, concurrency, pgtaskq_version, '
        "heartbeat_interval, last_heartbeat_at) VALUES "
        "('slow', 1, 1, 'x', 60, now() - interval '100 seconds'), "
        "('gone', 2, 1, 'x', 60, now() - interval '200 seconds'), "
        "('fast', 3, 1, 'x', 0.3, now() - interval '3 seconds')")
    statuses = {w["host"]: w["status"] for w in stats_json(pgtaskq_dsn, tq.schema)["workers"]}
    assert statuses == {"slow": "alive", "gone": "lost", "fast": "lost"}
    result = CliRunner().invoke(cli, ["--dsn", pgtaskq_dsn, "--schema", tq.schema, "check",
                                      "--json"])
    workers = next(c for c in json.loads(result.output)["checks"] if c["name"] == "workers")
    assert (workers["alive"], workers["lost"]) == (1, 2) and result.exit_code == 0
