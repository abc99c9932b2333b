"""``pgtaskq schedules``: the cron schedules workers registered, with last and next run.

It reads the ``schedules`` table only, so it needs no access to the application's code:
what it shows is what the workers registered. An inactive row is a schedule that is not in
the code of the most recently started worker; no next run is shown for it, since once the
workers that still have it are gone, nothing fires it. Times are UTC, as in ``pgtaskq jobs``; the
``tz`` column says in which zone the expression is read.

Schedules fire only while a worker runs. The ``fires`` column says whether anything will
fire an active schedule: ``no: no live worker`` when no worker is alive (its next run is
then only when it would be due), ``late`` when its next run passed over a minute ago
although workers are alive (none of them has the schedule in its code, say).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import click
from tabulate import tabulate

from pgtaskq import defaults
from pgtaskq.cli.group import pass_queue
from pgtaskq.printable import printable_cells
from pgtaskq.queue import TaskQueue
from pgtaskq.sql import cron as cron_sql
from pgtaskq.sql import render
from pgtaskq.sql import stats as stats_sql

COLUMNS = ("name", "expression", "tz", "next run (UTC)", "last run (UTC)", "last job",
           "active", "fires")
LATE_AFTER = 60.0
"""Seconds past its next run after which a schedule with live workers is called late."""


def _time(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def fetch_schedules(tq: TaskQueue) -> list[dict[str, Any]]:
    """One dict per schedule row, active ones first, by name, with ``live_workers`` and
    ``fires`` (``yes``, ``no: no live worker``, ``late``, or None when inactive)."""
    with tq.connection() as conn:
        rows = conn.execute(render(tq.schema, cron_sql.SCHEDULE_LIST)).fetchall()
        alive, _registered = conn.execute(render(tq.schema, stats_sql.WORKERS_ALIVE), {
            "lost_beats": defaults.WORKER_LOST_AFTER_BEATS,
            "lost_min": defaults.WORKER_LOST_AFTER_MIN}).fetchone()
        now = conn.execute("SELECT now()").fetchone()[0]
    keys = ("name", "expression", "tz", "task", "queue", "misfire", "active", "last_tick",
            "next_tick", "last_job_id", "last_job_status")
    schedules = [dict(zip(keys, row, strict=True)) for row in rows]
    for row in schedules:
        row["live_workers"] = alive
        row["fires"] = _fires(row, alive, now)
    return schedules


def _fires(row: dict[str, Any], alive: int, now: datetime) -> str | None:
    if not row["active"]:
        return None
    if not alive:
        return "no: no live worker"
    next_tick = row["next_tick"]
    if next_tick is not None and (now - next_tick).total_seconds() > LATE_AFTER:
        return "late"
    return "yes"


def _last_job(row: dict[str, Any]) -> str:
    if row["last_job_id"] is None:
        return ""
    # A job purged from history has no status left; its id still says a tick ran.
    return f"{row['last_job_id']} {row['last_job_status'] or 'purged'}"


@click.command("schedules")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per schedule.")
@pass_queue
def schedules_command(tq: TaskQueue, as_json: bool) -> None:
    """List cron schedules with their last and next run and the last job's status."""
    rows = fetch_schedules(tq)
    if as_json:
        for row in rows:
            row["last_tick"], row["next_tick"] = _iso(row["last_tick"]), _iso(row["next_tick"])
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no schedules registered (workers register them when they start)")
        return
    table = [
        [row["name"], row["expression"], row["tz"],
         _time(row["next_tick"]) if row["active"] else "",
         _time(row["last_tick"]), _last_job(row), "yes" if row["active"] else "no",
         row["fires"] or ""]
        for row in rows
    ]
    click.echo(tabulate(printable_cells(table), headers=COLUMNS, tablefmt="simple"))
    if rows[0]["live_workers"] == 0 and any(row["active"] for row in rows):
        click.echo("\nno live worker: no schedule fires until a worker starts (then a missed "
                   "tick runs once, or is skipped with misfire='skip')")
