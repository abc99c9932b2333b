"""``pgtaskq dashboard``: serve the web dashboard (``pgtaskq.contrib.dashboard``).

Binds 127.0.0.1 by default; ``--bind 0.0.0.0`` exposes it to the network, which is said
on start, since the dashboard has no login of its own (mount it in Flask or Django behind
their authentication for that). ``--read-only`` serves the pages without any action.
"""

from __future__ import annotations

import click

from pgtaskq.cli.group import pass_queue
from pgtaskq.queue import TaskQueue

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@click.command("dashboard")
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--bind", "-b", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="Address to listen on.")
@click.option("--read-only", is_flag=True, help="Pages only: no retry, cancel, pause...")
@click.option("--refresh", type=click.FloatRange(min=0), default=5.0, show_default=True,
              metavar="SECONDS", help="Overview refresh interval (0: never).")
@pass_queue
def dashboard_command(tq: TaskQueue, port: int, bind: str, read_only: bool,
                      refresh: float) -> None:
    """Serve the web dashboard: queues, jobs, workers, schedules, actions."""
    from pgtaskq.contrib.dashboard import Dashboard
    from pgtaskq.contrib.dashboard.serve import make

    try:
        server = make(Dashboard(tq, read_only=read_only, refresh=refresh), bind, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {bind}:{port}: {exc.strerror}") from exc
    host, actual_port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    click.echo(f"pgtaskq dashboard for schema {tq.schema} on http://{shown}:{actual_port}/ "
               f"({'read-only, ' if read_only else ''}Ctrl-C to stop)", err=True)
    if bind not in LOOPBACK:
        click.echo("warning: listening beyond this machine and the dashboard has no login; "
                   "anyone who reaches it can retry, cancel and pause"
                   + (" (read-only: can only look)" if read_only else ""), err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
