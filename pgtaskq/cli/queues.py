"""``pgtaskq pause | resume``: stop and restart the claiming of whole queues.

Both take several queue names and act on each, saying what happened to it; pausing a queue
that is already paused (or resuming a running one) is not an error, so scripts may repeat
them. With no queue name, ``pause`` lists the paused queues.
"""

from __future__ import annotations

from datetime import timezone

import click

from pgtaskq import options
from pgtaskq.cli.group import pass_queue, user_errors
from pgtaskq.queue import TaskQueue


@click.command("pause")
@click.argument("queues", nargs=-1, metavar="QUEUE...")
@pass_queue
def pause_command(tq: TaskQueue, queues: tuple[str, ...]) -> None:
    """Stop workers claiming jobs of QUEUE (running jobs finish); no QUEUE: list paused."""
    if not queues:
        paused = tq.paused_queues()
        for name, at in paused.items():
            click.echo(f"{name}\tpaused since "
                       f"{at.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC")
        if not paused:
            click.echo("no queue is paused")
        return
    _check_names(queues)
    for queue in queues:
        changed = tq.pause(queue)
        click.echo(f"queue {queue}: {'paused' if changed else 'already paused'}")


@click.command("resume")
@click.argument("queues", nargs=-1, required=True, metavar="QUEUE...")
@pass_queue
def resume_command(tq: TaskQueue, queues: tuple[str, ...]) -> None:
    """Let workers claim jobs of a paused QUEUE again."""
    _check_names(queues)
    for queue in queues:
        changed = tq.resume(queue)
        click.echo(f"queue {queue}: {'resumed' if changed else 'was not paused'}")


def _check_names(queues: tuple[str, ...]) -> None:
    """Every name valid before any queue changes: one bad name changes nothing."""
    with user_errors():
        for queue in queues:
            options.check_queue(queue)
