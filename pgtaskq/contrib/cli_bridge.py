"""Run pgtaskq's click CLI from a framework's own command line with its TaskQueue.

``manage.py pgtaskq ...`` and ``flask pgtaskq ...`` must mirror ``pgtaskq ...`` exactly,
so both hand their arguments to the same click group with ``--dsn``/``--schema`` taken
from the framework's settings. ``worker`` gets the framework's prepared TaskQueue as its
``APP`` argument: the only thing a framework adds is how tasks are found and what wraps
each job.
"""

from __future__ import annotations

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
    from pgtaskq.cli import cli

    args = list(argv)
    if args and args[0] == "worker":
        if len(args) > 1 and not args[1].startswith("-") and ":" in args[1]:
            raise click.UsageError(
                "the worker's tasks come from the framework's settings: drop the APP argument"
            )
        # The worker takes DSN and schema from the framework's queue itself.
        args = ["worker", worker_app, *args[1:]]
    else:
        args = ["--dsn", queue.dsn, "--schema", queue.schema, *args]
    result: Any = cli.main(
        args=args,
        prog_name=prog_name,
        standalone_mode=False,
    )
    return result if isinstance(result, int) else 0

