"""Run pgtaskq's click CLI from a framework's own command line with its TaskQueue.

``manage.py pgtaskq ...`` and ``flask pgtaskq ...`` must mirror ``pgtaskq ...`` exactly,
so both hand their arguments to the same click group with ``--dsn``/``--schema`` taken
from the framework's settings. ``worker`` gets the framework's prepared TaskQueue as its
``APP`` argument: the only thing a framework adds is how tasks are found and what wraps
each job.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import click

from pgtaskq.queue import TaskQueue


def run_cli(
    queue: TaskQueue, argv: Sequence[str], *, worker_app: str, prog_name: str
) -> int:
    """Invoke ``pgtaskq [--dsn] [--schema] argv...``; return the exit status.

    Click's user errors are raised as ``click.ClickException`` (callers turn them into
    their framework's error type) instead of exiting the process.
    """
    args = list(argv)
    position = _command_position(args)
    if position is not None and args[position] == "worker":
        rest = args[position + 1:]
        if rest and not rest[0].startswith("-") and ":" in rest[0]:
            raise click.UsageError(
                "the worker's tasks come from the framework's settings: drop the APP argument"
            )
        # The worker takes DSN and schema from the framework's queue itself (unless the
        # user gave --dsn/--schema here, which pgtaskq's worker applies to it).
    else:
        args = ["--dsn", queue.dsn, "--schema", queue.schema, *args]
    result: Any = framework_cli(worker_app).main(
        args=args,
        prog_name=prog_name,
        standalone_mode=False,
    )
    return result if isinstance(result, int) else 0


def framework_cli(worker_app: str) -> click.Group:
    """pgtaskq's group whose ``worker`` has no APP argument: it serves ``worker_app``.

    ``manage.py pgtaskq worker --help`` showed pgtaskq's ``worker APP`` usage, an argument
    the framework command refuses. The copy keeps every option of the real command and
    calls it with ``app=worker_app``.
    """
    from pgtaskq.cli import cli

    worker = cli.commands["worker"]

    def run_worker(**options: Any) -> Any:
        assert worker.callback is not None
        return worker.callback(app=worker_app, **options)

    framework_worker = click.Command(
        "worker",
        params=[param for param in worker.params if param.name != "app"],
        callback=run_worker,
        help="Run this project's jobs until SIGTERM/SIGINT. Its tasks come from the "
             "framework's settings (every app's tasks module, or the app's PgTaskQ).",
        context_settings=worker.context_settings,
    )
    group = copy.copy(cli)
    group.commands = {**cli.commands, "worker": framework_worker}
    return group


_GLOBAL_OPTIONS_WITH_VALUE = ("--dsn", "--schema")


def _command_position(args: list[str]) -> int | None:
    """Index of the command name in ``[global options] COMMAND ...`` (None if absent)."""
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in _GLOBAL_OPTIONS_WITH_VALUE:
            index += 2
        elif arg.startswith("-"):
            index += 1
        else:
            return index
    return None
