"""``pgtaskq check`` and ``pgtaskq purge``: health for monitors, retention by hand.

``check`` prints one line per finding and exits 1 when jobs are not being run (no live
worker, a ready job waiting longer than ``--max-age``) and 3 when it could not look (the
database unreachable, the schema missing), so a load balancer or monitor can use its exit
status alone and tell "the queue is stuck" from "the check is broken". ``purge`` deletes
finished jobs in the same small batches the workers' pruner uses, so it is safe to run on
a busy production queue.
"""

from __future__ import annotations

import json

import click
import psycopg

from pgtaskq.cli.duration import DURATION
from pgtaskq.cli.group import CliContext, pass_cli, pass_queue
from pgtaskq.duration import format_age
from pgtaskq.errors import PgtaskqError, first_line
from pgtaskq.operations import health, retention
from pgtaskq.printable import printable
from pgtaskq.queue import TaskQueue


@click.command("check")
@click.option("--max-age", type=DURATION, default=300.0, show_default="5m",
              help="Fail when the oldest ready job has waited longer (90s, 15m, 1h).")
@click.option("--min-workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="Fail with fewer live workers (0: do not check workers).")
@click.option("--max-xact-age", type=DURATION, default=None,
              help="Also fail when a transaction holds the xmin horizon longer than this.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@pass_cli
def check_command(cli_context: CliContext, max_age: float, min_workers: int,
                  max_xact_age: float | None, as_json: bool) -> None:
    """Exit 0 when workers are alive and the backlog is fresh, 1 when not, 3 when the
    check could not run (database unreachable, schema missing)."""
    try:
        tq = cli_context.installed_queue()
        with tq.connect() as conn:
            report = health.check(conn, tq.schema, max_age=max_age,
                                  min_workers=min_workers, max_xact_age=max_xact_age)
    except (PgtaskqError, psycopg.Error, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) \
            else first_line(exc)
        if as_json:
            click.echo(json.dumps(health.unknown_json(message)))
        click.echo(f"Error: could not check: {message}", err=True)
        raise SystemExit(health.EXIT_UNKNOWN) from None
    if as_json:
        click.echo(json.dumps(report.to_json(), default=str))
    else:
        labels = {"ok": "OK", "failed": "FAIL", "warning": "WARN", "info": "INFO"}
        for finding in report.findings:
            click.echo(printable(
                f"{labels[finding.status]:<5} {finding.name}: {finding.message}"))
    raise SystemExit(report.exit_code)


@click.command("purge")
@click.option("--older-than", type=DURATION, required=True,
              help="Delete finished jobs that finished longer ago (90s, 15m, 3h, 3d).")
@click.option("--status", "statuses", multiple=True,
              type=click.Choice(retention.FINAL_STATUSES),
              help="Only this status (repeatable); default: all finished statuses.")
@pass_queue
def purge_command(tq: TaskQueue, older_than: float, statuses: tuple[str, ...]) -> None:
    """Delete the history of finished jobs older than a duration, in small batches."""
    with tq.connect() as conn:
        deleted = retention.purge(retention.on_connection(conn), tq.schema, older_than,
                               statuses or retention.FINAL_STATUSES)
    detail = ", ".join(f"{status} {count:,}" for status, count in deleted.items())
    click.echo(f"purged {sum(deleted.values()):,} finished jobs older than "
               f"{format_age(older_than)} ({detail})")
