"""``pgtaskq stats``: the terminal dashboard (``--watch``) and its ``--json`` form.

Rendering only: the figures and how they are read cheaply are in ``pgtaskq.operations.stats``. The
watch loop keeps one autocommit connection, redraws in place on a terminal (one screen
fitted to its size: ``pgtaskq.cli.screen``) and appends full frames otherwise (a log
file or a pipe must not fill with escape codes), survives a database outage by showing
the error and trying again, and ends with exit status 0 on Ctrl-C: stopping the dashboard
is not a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from datetime import timezone
from typing import Any

import click
import psycopg
from tabulate import tabulate

from pgtaskq.cli import screen
from pgtaskq.cli.duration import Seconds
from pgtaskq.cli.group import pass_queue
from pgtaskq.cli.screen import render_fitted
from pgtaskq.duration import format_age, format_ms
from pgtaskq.errors import DatabaseUnavailableError, first_line
from pgtaskq.operations import stats
from pgtaskq.printable import printable
from pgtaskq.queue import TaskQueue

SPARK = "▁▂▃▄▅▆▇█"
CLEAR = "\x1b[H\x1b[2J"
ERROR_WIDTH = 70
APPLICATION_NAME = "pgtaskq stats {pid}"
"""Shown in pg_stat_activity, so an operator can tell the dashboard's session apart."""


def sparkline(values: list[int]) -> str:
    """One character per value, scaled to the largest; blank for zero."""
    top = max(values, default=0)
    if top <= 0:
        return " " * len(values)
    return "".join(" " if v <= 0 else SPARK[min(len(SPARK) - 1, (v * len(SPARK) - 1) // top)]
                   for v in values)


def _n(value: int, estimated: bool = False) -> str:
    return ("~" if estimated and value else "") + f"{value:,}"


def _windows(counts: dict[str, int]) -> str:
    return "/".join(f"{counts[w]:,}" for w in stats.WINDOWS)


def _latency(row: stats.Row, which: str) -> str:
    p = row.percentiles(which)
    if p["p50"] is None:
        return ""
    return f"{format_ms(p['p50'])}/{format_ms(p['p95'])}"


def _figures(row: stats.Row, first: str, second: str) -> list[Any]:
    oldest = format_age(row.oldest_ready_age)
    return [first, second, _n(row.ready, row.estimated), _n(row.scheduled, row.estimated),
            _n(row.running), _windows(row.succeeded), _windows(row.failed),
            f"{row.retried_1h:,}", f"{row.throughput:,.1f}", _latency(row, "wait"),
            _latency(row, "run"), oldest]


HEADERS = ["queue", "task", "ready", "sched", "running", "ok\n1m/5m/1h",
           "failed\n1m/5m/1h", "retried\n1h", "jobs/s", "wait\np50/p95", "run\np50/p95",
           "oldest\nready"]


def render(snapshot: stats.Snapshot, schema: str) -> str:
    """The dashboard as text."""
    at = snapshot.at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    out = [f"pgtaskq stats: schema {schema}, {at} (read in {snapshot.elapsed_ms:.0f} ms)", ""]
    table = [_figures(r, r.queue or "", (r.task or "") + (" (NO WORKER)" if r.no_worker else ""))
             for r in snapshot.tasks]
    table.append(_figures(snapshot.total, "TOTAL", ""))
    out.append(tabulate(table, HEADERS, disable_numparse=True,
                        colalign=("left", "left") + ("right",) * (len(HEADERS) - 2)))
    notes = ["1m/5m/1h: current minute plus 1/5/60 before; jobs/s over 1m; latency over "
             "5m; sched: run_at in the future"]
    if snapshot.estimated:
        notes.append("~ = estimate from a table sample (jobs table too large to count); "
                     "oldest ready per queue is exact")
    out.extend("  " + note for note in notes)
    if snapshot.no_worker:
        out += ["", "NO WORKER registers task(s) "
                + ", ".join(f"{t} ({n:,} jobs)" for t, n in snapshot.no_worker.items())
                + ": their jobs wait, parked, until a worker that knows the task starts"]
    if snapshot.paused:
        out += ["", f"PAUSED queues: {', '.join(snapshot.paused)} (workers do not claim "
                "their jobs; 'pgtaskq resume QUEUE')"]
    if snapshot.queues:
        out += ["", "finished per minute, last hour (oldest left):"]
        width = max(len(q.queue or "") for q in snapshot.queues)
        for q in snapshot.queues:
            out.append(f"  {(q.queue or '').ljust(width)} |{sparkline(q.series)}| "
                       f"max {max(q.series, default=0):,}/min, now {q.throughput:,.1f}/s, "
                       f"oldest ready {format_age(q.oldest_ready_age) or '-'}"
                       + (", PAUSED" if q.paused else ""))
    out += ["", "workers:"]
    if snapshot.workers:
        out.append(tabulate(
            [[w.id, w.host, w.pid, ",".join(w.queues) if w.queues else "all",
              w.concurrency, w.busy, w.stuck, format_age(w.heartbeat_age) + " ago",
              w.status, f"{w.finished_1m:,}"] for w in snapshot.workers],
            ["id", "host", "pid", "queues", "slots", "busy at beat", "stuck", "heartbeat",
             "status", "done 1m"], disable_numparse=True))
    else:
        out.append("  no workers registered")
    alive = sum(1 for w in snapshot.workers if w.status == "alive")
    if not alive:
        out.append("  WARNING: no worker is alive; queued jobs are not being run")
    out += ["", "recent failures:"]
    if snapshot.failures:
        out.append(tabulate(
            [[f.job_id, f.task, f"{f.attempts}/{f.max_attempts}",
              f.finished_at.astimezone(timezone.utc).strftime("%H:%M:%S"), _short(f.error)]
             for f in snapshot.failures],
            ["job", "task", "attempts", "finished", "error"], disable_numparse=True))
    else:
        out.append("  none in the last day")
    return printable("\n".join(out), multiline=True)


def _short(text: str) -> str:
    return text if len(text) <= ERROR_WIDTH else text[: ERROR_WIDTH - 1] + "…"


@click.command("stats")
@click.option("--watch", "-w", type=Seconds(min=0.1), is_flag=False, flag_value=2.0,
              default=None, metavar="[SECONDS]",
              help="Redraw every SECONDS (default 2) until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (one document per line with --watch).")
@click.option("--queue", "-q", help="Only this queue.")
@click.option("--task", "-t", help="Only this task.")
@click.option("--failures", type=click.IntRange(min=0), default=10, show_default=True,
              help="Recent failures to list.")
@click.option("--compact", is_flag=True,
              help="The one-screen view --watch shows on a terminal, fitted to its size "
                   "(80x24 when not a terminal).")
@pass_queue
def stats_command(tq: TaskQueue, watch: float | None, as_json: bool, queue: str | None,
                  task: str | None, failures: int, compact: bool) -> None:
    """Queue depth, throughput, latency, workers and failures, per queue and task."""
    if watch is None:
        with _connect(tq) as conn:
            _show(collect(conn, tq, queue, task, failures), tq.schema, as_json, False,
                  compact)
        return
    _watch(tq, watch, as_json, queue, task, failures, compact)


def _connect(tq: TaskQueue) -> psycopg.Connection:
    return tq.connect(application_name=APPLICATION_NAME.format(pid=os.getpid()))


def collect(conn: psycopg.Connection, tq: TaskQueue, queue: str | None, task: str | None,
            failures: int) -> stats.Snapshot:
    return stats.collect(conn, tq.schema, queue=queue, task=task, failures=failures)


def _show(snapshot: stats.Snapshot, schema: str, as_json: bool, redraw: bool,
          compact: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(snapshot.to_json(), default=str))
        return
    if redraw:  # a terminal: one screen of its size, drawn over the previous frame
        size = shutil.get_terminal_size()
        click.echo(screen.frame(render_fitted(snapshot, schema, size.columns, size.lines)),
                   nl=False)
        return
    if compact:
        size = shutil.get_terminal_size()
        click.echo(render_fitted(snapshot, schema, size.columns, size.lines))
        return
    click.echo(render(snapshot, schema) + "\n")


def _watch(tq: TaskQueue, interval: float, as_json: bool, queue: str | None,
           task: str | None, failures: int, compact: bool = False) -> None:
    redraw = sys.stdout.isatty() and not as_json
    conn: psycopg.Connection | None = None
    try:
        while True:
            began = time.monotonic()
            try:
                if conn is None or conn.closed:
                    conn = _connect(tq)
                _show(collect(conn, tq, queue, task, failures), tq.schema, as_json, redraw,
                      compact)
            except (psycopg.OperationalError, psycopg.InterfaceError,
                    DatabaseUnavailableError) as exc:
                # A restart or a killed connection: say so and try again next frame.
                click.echo((CLEAR if redraw else "") +
                           f"database unavailable, retrying every {interval:g}s: "
                           f"{first_line(exc)}", err=not redraw)
                if conn is not None:
                    conn.close()
            time.sleep(max(0.0, interval - (time.monotonic() - began)))
    except KeyboardInterrupt:
        pass
    finally:
        if conn is not None:
            conn.close()
