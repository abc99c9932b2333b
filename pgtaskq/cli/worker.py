"""``pgtaskq worker APP``: import the user's TaskQueue and run a Worker on it.

``APP`` is ``module:attribute`` (``module`` alone means ``module:tq``). The current
directory is put on ``sys.path`` first, as ``gunicorn`` and ``flask`` do, so
``pgtaskq worker app.tasks:tq`` works from the project root. An APP that cannot be
imported, or is not a TaskQueue, is a one-line error with exit status 2.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from pgtaskq import defaults, logs
from pgtaskq.cli.context import CliContext, one_line, pass_cli
from pgtaskq.cli.duration import DURATION, Seconds
from pgtaskq.queue import TaskQueue


def load_app(app: str) -> TaskQueue:
    """Import ``module:attribute`` and return the TaskQueue it names."""
    module_name, _, attribute = app.partition(":")
    attribute = attribute or "tq"
    if not module_name:
        raise click.UsageError(f"APP must be 'module:attribute', got {app!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.UsageError(f"cannot import {module_name!r}: {one_line(exc)}") from exc
    try:
        value = module
        for part in attribute.split("."):
            value = getattr(value, part)
    except AttributeError:
        raise click.UsageError(
            f"module {module_name!r} has no attribute {attribute!r}"
        ) from None
    if not isinstance(value, TaskQueue):
        raise click.UsageError(
            f"{app!r} is a {type(value).__name__}, not a pgtaskq.TaskQueue"
        )
    return value


@click.command("worker")
@click.argument("app")
@click.option("-c", "--concurrency", type=click.IntRange(min=1),
              default=defaults.CONCURRENCY, show_default=True, help="Slot threads.")
@click.option("-q", "--queue", "queues", multiple=True, metavar="QUEUE",
              help="Serve only this queue (repeatable); default: all queues.")
@click.option("--poll-interval", type=Seconds(min=0, min_open=True),
              default=defaults.POLL_INTERVAL, show_default=True,
              help="Seconds between polls when no NOTIFY arrives.")
@click.option("--poll-only", is_flag=True, help="Do not LISTEN (e.g. behind PgBouncer).")
@click.option("--listen-dsn", metavar="DSN", envvar="PGTASKQ_LISTEN_DSN",
              help="Direct DSN for LISTEN when --dsn goes through a transaction pooler "
                   "(default $PGTASKQ_LISTEN_DSN: keeps its password out of `ps`).")
@click.option("--grace", type=Seconds(min=0), default=defaults.GRACE,
              show_default=True, help="Seconds running jobs get to finish on SIGTERM.")
@click.option("--lease", type=Seconds(min=0, min_open=True), default=defaults.LEASE,
              show_default=True, help="Seconds a lease lasts without a heartbeat.")
@click.option("--claimers", type=click.IntRange(min=0), default=defaults.CLAIMERS,
              show_default=True,
              help="Workers of the same queues that may lease jobs at the same moment; the "
                   "others wait for a turn (0: no limit). Give all of them the same value.")
@click.option("--heartbeat-interval", type=Seconds(min=0, min_open=True),
              default=defaults.HEARTBEAT_INTERVAL, show_default=True)
@click.option("--rescue-interval", type=Seconds(min=0, min_open=True),
              default=defaults.RESCUE_INTERVAL, show_default=True,
              help="Seconds between looks for jobs of dead workers.")
@click.option("--prefetch", type=click.IntRange(min=0), default=None,
              show_default="adaptive",
              help="Jobs leased beyond the free slots (they wait for a slot). Default: as "
                   "many as start within 50 ms at the recent job duration, up to 32 per slot.")
@click.option("--backoff-base", type=Seconds(min=0, min_open=True),
              default=defaults.BACKOFF_BASE, show_default=True,
              help="Seconds before the first automatic retry; doubles per attempt.")
@click.option("--backoff-cap", type=Seconds(min=0, min_open=True),
              default=defaults.BACKOFF_CAP, show_default=True)
@click.option("--keep-succeeded", type=DURATION, default=defaults.KEEP_SUCCEEDED,
              show_default="1d", help="Keep succeeded jobs' history this long (90s, 3h, 2d).")
@click.option("--keep-failed", type=DURATION, default=defaults.KEEP_FAILED,
              show_default="7d", help="Keep failed and cancelled jobs' history this long.")
@click.option("--burst", is_flag=True,
              help="Run the jobs that are due, then exit 0 (CI, cron, one-off drains).")
@click.option("--max-jobs", type=click.IntRange(min=1), default=None, metavar="N",
              help="Exit 0 after N jobs, to be restarted by the supervisor.")
@click.option("--max-memory", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="MB", help="Exit 0 once resident memory passes MB MiB (leaky tasks).")
@click.option("--reload", is_flag=True,
              help="Restart when a loaded source file changes (development).")
@click.option("--log-level", default=None, show_default="INFO, or the application's",
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="Level of pgtaskq's loggers (per-job lines are DEBUG).")
@click.option("--log-format", type=click.Choice(logs.FORMATS), default="text",
              show_default=True, help="Format of the lines pgtaskq's handler prints.")
@click.option("--configure-logging/--no-configure-logging", default=None,
              help="Install pgtaskq's stderr handler even though the application configured "
                   "logging (replacing the root logger's handlers) / never. Default: only "
                   "when the application has not configured logging.")
@pass_cli
@click.pass_context
def worker_command(ctx: click.Context, cli_context: CliContext, app: str, concurrency: int,
                   queues: tuple[str, ...], poll_interval: float, poll_only: bool,
                   listen_dsn: str | None, grace: float, lease: float, claimers: int,
                   heartbeat_interval: float, rescue_interval: float, prefetch: int | None,
                   backoff_base: float, backoff_cap: float, keep_succeeded: float,
                   keep_failed: float, burst: bool, max_jobs: int | None,
                   max_memory: float | None, reload: bool, log_level: str | None,
                   log_format: str, configure_logging: bool | None) -> None:
    """Run jobs of the TaskQueue APP (module:attribute) until SIGTERM/SIGINT."""
    from pgtaskq.worker import Worker

    tq = load_app(app)
    # After the import: Django's LOGGING (or the app's basicConfig) is in place by then.
    logs.configure(log_level, log_format, configure_logging)
    parent = ctx.parent
    if parent is not None:
        overrides = {}
        for name in ("dsn", "schema"):
            source = parent.get_parameter_source(name)
            if source is not None and source.name == "COMMANDLINE":
                overrides[name] = getattr(cli_context, name)
        if cli_context.prepare is False:
            overrides["prepare"] = False
        if overrides:
            tq.reconfigure(**overrides)
    worker = Worker(
        tq, concurrency=concurrency, queues=list(queues) or None,
        poll_interval=poll_interval, poll_only=poll_only, listen_dsn=listen_dsn,
        grace=grace, lease=lease, claimers=claimers, heartbeat_interval=heartbeat_interval,
        rescue_interval=rescue_interval, prefetch=prefetch,
        backoff_base=backoff_base, backoff_cap=backoff_cap,
        keep_succeeded=keep_succeeded, keep_failed=keep_failed,
        burst=burst, max_jobs=max_jobs, max_memory=max_memory,
    )
    if not reload:
        worker.run()
        return
    from pgtaskq.worker import reloader

    watcher = reloader.CodeWatcher(on_change=worker.stop)
    watcher.start()
    try:
        worker.run()
    finally:
        watcher.stop()
    if watcher.changed is not None:
        reloader.restart_process(watcher.changed)
