"""``pgtaskq check`` and ``pgtaskq purge``: health for monitors, retention by hand.

``check`` prints one line per finding and exits 1 when jobs are not being run (no live
worker, a ready job waiting longer than ``--max-age``), so a load balancer or cron job can
use its exit status alone. ``purge`` deletes finished jobs in the same small batches the
workers' pruner uses, so it is safe to run on a busy production queue.
"""

from __future__ import annotations

import json

import click

from pgtaskq import health, pruner
from pgtaskq.cli.context import pass_queue
from pgtaskq.cli.duration import DURATION
from pgtaskq.duration import format_age
from pgtaskq.queue import TaskQueue


@click.command("check")
@click.option("--max-age", type=DURATION, default=300.0, show_default="5m",
              help="Fail when the oldest ready job has waited longer (90s, 15m, 1h).")
@click.option("--min-workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="Fail with fewer live workers (0: do not check workers).")
@click.option("--max-xact-age", type=DURATION, default=None,
              help="Also fail when a transaction holds the xmin horizon longer than this.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@pass_queue
def check_command(tq: TaskQueue, max_age: float, min_workers: int,
                  max_xact_age: float | None, as_json: bool) -> None:
    """Exit 0 when workers are alive and the backlog is fresh, 1 otherwise."""
    with tq.connect() as conn:
        report = health.check(conn, tq.schema, max_age=max_age, min_workers=min_workers,
                              max_xact_age=max_xact_age)
    if as_json:
        click.echo(json.dumps(report.to_json(), default=str))
    else:
        for finding in report.findings:
            label = "OK" if finding.ok else ("FAIL" if finding.failing else "WARN")
            if finding.ok and not finding.failing:
                label = "INFO"
            click.echo(f"{label:<5} {finding.name}: {finding.message}")
    if not report.healthy:
        raise SystemExit(1)


@click.command("purge")
@click.option("--older-than", type=DURATION, required=True,
              help="Delete finished jobs that finished longer ago (90s, 15m, 3h, 3d).")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(pruner.FINAL_STATUSES),
              help="Only this status (repeatable); default: all finished statuses.")
@pass_queue
def purge_command(tq: TaskQueue, older_than: float, statuses: tuple[str, ...]) -> None:
    """Delete the history of finished jobs older than a duration, in small batches."""
    with tq.connect() as conn:
        deleted = pruner.purge(pruner.on_connection(conn), tq.schema, older_than,
                               statuses or pruner.FINAL_STATUSES)
    detail = ", ".join(f"{status} {count:,}" for status, count in deleted.items())
    click.echo(f"purged {sum(deleted.values()):,} finished jobs older than "
               f"{format_age(older_than)} ({detail})")
