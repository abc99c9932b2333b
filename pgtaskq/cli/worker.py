"""``pgtaskq worker APP``: import the user's TaskQueue and run a Worker on it.

``APP`` is ``module:attribute`` (``module`` alone means ``module:tq``). The current
directory is put on ``sys.path`` first, as ``gunicorn`` and ``flask`` do, so
``pgtaskq worker app.tasks:tq`` works from the project root. An APP that cannot be
imported, or is not a TaskQueue, is a one-line error with exit status 2.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pgtaskq import logs
from pgtaskq.cli.duration import DURATION, Seconds
from pgtaskq.cli.group import CliContext, pass_cli
from pgtaskq.errors import first_line
from pgtaskq.queue import TaskQueue
from pgtaskq.worker import config

F = TypeVar("F", bound=Callable[..., Any])


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
        raise click.UsageError(f"cannot import {module_name!r}: {first_line(exc)}") from exc
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


_TYPES: dict[str, Any] = {
    "count": click.IntRange(min=1),
    "count0": click.IntRange(min=0),
    "seconds": Seconds(min=0, min_open=True),
    "seconds0": Seconds(min=0),
    "duration": DURATION,
    "mib": click.FloatRange(min=0, min_open=True),
    "text": None,
    "pool": click.Choice(config.POOLS),
}


def _option(declared: dataclasses.Field) -> Callable[[F], F]:
    """The click option of one ``WorkerConfig`` setting."""
    meta = declared.metadata
    kind = meta["kind"]
    kwargs: dict[str, Any] = {"help": meta["help"] or None}
    if kind == "queues":
        decls = [*meta["flags"], "--queue", declared.name]
        kwargs["multiple"] = True
    else:
        decls = [*meta["flags"], "--" + declared.name.replace("_", "-")]
        if kind == "flag":
            kwargs["is_flag"] = True
        else:
            kwargs.update(type=_TYPES[kind], default=declared.default,
                          show_default=declared.default is not None)
    kwargs.update(meta["cli_extra"])
    return click.option(*decls, **kwargs)


def worker_settings(command: F) -> F:
    """Every command-line setting of ``WorkerConfig`` as an option, in declaration order."""
    for declared in reversed(list(config.declarations())):
        if declared.metadata["cli"]:
            command = _option(declared)(command)
    return command


@click.command("worker")
@click.argument("app")
@worker_settings
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
def worker_command(ctx: click.Context, cli_context: CliContext, app: str, reload: bool,
                   log_level: str | None, log_format: str, configure_logging: bool | None,
                   **settings: Any) -> None:
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
    settings["queues"] = list(settings["queues"]) or None
    worker = Worker(tq, **settings)
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
