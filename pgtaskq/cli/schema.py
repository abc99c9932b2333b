"""``pgtaskq install | upgrade | uninstall``: manage the schema from the shell.

All three are idempotent and safe to run from many processes at once (the migrations take
an advisory lock), so deploy scripts can run ``pgtaskq install`` on every boot.
``uninstall`` deletes every job, so it asks first unless ``--yes`` is given.
"""

from __future__ import annotations

import click

from pgtaskq.cli.group import CliContext, pass_cli, user_errors


def _report(schema: str, before: int, after: int) -> None:
    if before == after:
        click.echo(f"pgtaskq schema {schema!r} is up to date (version {after})")
    elif before == 0:
        click.echo(f"installed pgtaskq in schema {schema!r} (version {after})")
    else:
        click.echo(f"upgraded pgtaskq schema {schema!r} from version {before} to {after}")


@click.command("install")
@pass_cli
def install_command(cli_context: CliContext) -> None:
    """Create pgtaskq's tables (or bring them up to date)."""
    queue = cli_context.queue()
    _report(queue.schema, *queue.install())


@click.command("upgrade")
@pass_cli
def upgrade_command(cli_context: CliContext) -> None:
    """Apply pending schema migrations."""
    queue = cli_context.queue()
    _report(queue.schema, *queue.upgrade())


@click.command("uninstall")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def uninstall_command(cli_context: CliContext, yes: bool) -> None:
    """Drop pgtaskq's tables, with every job in them."""
    queue = cli_context.queue()
    if not yes:
        click.confirm(
            f"Drop pgtaskq's tables in schema {queue.schema!r}, with every job in them?",
            abort=True,
        )
    if queue.uninstall():
        click.echo(f"uninstalled pgtaskq from schema {queue.schema!r}")
    else:
        click.echo(
            f"pgtaskq was not installed in schema {queue.schema!r}: nothing was dropped"
        )


@click.command("grant")
@click.option("--producer", "producers", multiple=True, metavar="ROLE",
              help="May enqueue: INSERT of the enqueue columns only (repeatable).")
@click.option("--worker", "workers", multiple=True, metavar="ROLE",
              help="May run workers: leasing, outcomes, cron, pruning (repeatable).")
@click.option("--reader", "readers", multiple=True, metavar="ROLE",
              help="May read: stats, jobs, show, check (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the GRANT statements; run nothing.")
@pass_cli
def grant_command(cli_context: CliContext, producers: tuple[str, ...],
                  workers: tuple[str, ...], readers: tuple[str, ...], dry_run: bool) -> None:
    """Grant roles exactly what producers, workers or readers need (run as the owner)."""
    if not (producers or workers or readers):
        raise click.UsageError("name at least one role: --producer, --worker or --reader")
    queue = cli_context.queue()
    with user_errors():
        statements = queue.grant(producer=producers, worker=workers, reader=readers,
                                 dry_run=dry_run)
    for statement in statements:
        click.echo(statement + ";")
    if not dry_run:
        click.echo(f"-- {len(statements)} grants applied in schema {queue.schema!r}", err=True)
