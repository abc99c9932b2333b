"""The ``pgtaskq`` command line: one click group, commands in small modules beside it.

``pgtaskq [--dsn DSN] [--schema NAME] COMMAND``. The global options are read once here
(with ``$PGTASKQ_DSN`` / ``$PGTASKQ_SCHEMA`` as defaults) and handed to commands through
``pgtaskq.cli.group``: a command declares ``@pass_queue`` (an installed TaskQueue) or
``@pass_cli`` (the raw options) and never parses them itself. Errors a user can fix are
printed as one line, with a non-zero exit status, by ``PgtaskqGroup``.

To add a command: write ``some_command`` in its own module under ``pgtaskq/cli/`` and
register it in the marked block below.
"""

from __future__ import annotations

import signal

import click

from pgtaskq import defaults
from pgtaskq._version import __version__
from pgtaskq.cli.dashboard import dashboard_command
from pgtaskq.cli.group import CliContext, PgtaskqGroup
from pgtaskq.cli.jobs import (
    cancel_command,
    enqueue_command,
    jobs_command,
    retry_command,
    show_command,
)
from pgtaskq.cli.metrics import metrics_command
from pgtaskq.cli.ops import check_command, purge_command
from pgtaskq.cli.queues import pause_command, resume_command
from pgtaskq.cli.schedules import schedules_command
from pgtaskq.cli.schema import (
    grant_command,
    install_command,
    uninstall_command,
    upgrade_command,
)
from pgtaskq.cli.stats import stats_command
from pgtaskq.cli.worker import worker_command


@click.group(cls=PgtaskqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dsn", envvar="PGTASKQ_DSN", show_envvar=True, metavar="DSN",
              help="PostgreSQL DSN, or 'embedded[:PATH]' for the embedded server.")
@click.option("--schema", envvar="PGTASKQ_SCHEMA", show_envvar=True,
              default=defaults.SCHEMA, show_default=True, metavar="NAME",
              help="Schema holding pgtaskq's tables.")
@click.option("--no-prepare", "no_prepare", is_flag=True,
              help="Never use named prepared statements (PgBouncer before 1.21 in "
                   "transaction mode); also $PGTASKQ_PREPARE=0.")
@click.version_option(__version__, prog_name="pgtaskq")
@click.pass_context
def cli(ctx: click.Context, dsn: str | None, schema: str, no_prepare: bool) -> None:
    """pgtaskq: a PostgreSQL-native background job queue."""
    ctx.obj = CliContext(dsn, schema, prepare=False if no_prepare else None)
    ctx.call_on_close(ctx.obj.close)


# -- commands ---------------------------------------------------------------------------
# Register every command here, one line each (worker, stats, schedules, purge, check, ...).
cli.add_command(install_command)
cli.add_command(upgrade_command)
cli.add_command(uninstall_command)
cli.add_command(grant_command)
cli.add_command(enqueue_command)
cli.add_command(jobs_command)
cli.add_command(show_command)
cli.add_command(cancel_command)
cli.add_command(retry_command)
cli.add_command(worker_command)
cli.add_command(schedules_command)
cli.add_command(stats_command)
cli.add_command(check_command)
cli.add_command(purge_command)
cli.add_command(metrics_command)
cli.add_command(pause_command)
cli.add_command(resume_command)
cli.add_command(dashboard_command)
# -- end of commands --------------------------------------------------------------------


def main() -> None:
    """Console-script entry point (``pgtaskq``, ``python -m pgtaskq``).

    SIGTERM exits through ``SystemExit`` (status 143) rather than the default instant death,
    so ``atexit`` handlers run: an embedded server this process was the last user of is
    stopped. ``pgtaskq worker`` installs its own graceful handler on top.
    """
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    cli(prog_name="pgtaskq")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
