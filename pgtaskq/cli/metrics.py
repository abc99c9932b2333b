"""``pgtaskq metrics``: a Prometheus exporter for one pgtaskq schema.

A separate small process beside the workers (one per schema is enough; several are
harmless) rather than an endpoint in each worker: a scrape reads the database, and one
reader per schema keeps that cost constant however many workers run. It serves
``/metrics`` over HTTP until SIGTERM or Ctrl-C (exit 0) and survives database outages
(``pgtaskq_up 0``). What each metric means is in ``pgtaskq.operations.metrics`` and the README.
"""

from __future__ import annotations

import os
import signal
import threading

import click

from pgtaskq.cli.group import CliContext, pass_cli

APPLICATION_NAME = "pgtaskq metrics {pid}"


@click.command("metrics")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=9187,
              show_default=True, help="TCP port (0: any free port, printed at start).")
@click.option("--bind", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="Address to listen on ('0.0.0.0' for every interface).")
@pass_cli
def metrics_command(cli_context: CliContext, port: int, bind: str) -> None:
    """Serve Prometheus metrics of queues, jobs and workers at /metrics."""
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise click.ClickException(
            "pgtaskq metrics needs prometheus-client: pip install 'pgtaskq[prometheus]'"
        ) from None
    from pgtaskq.operations.metrics import PgtaskqCollector

    tq = cli_context.installed_queue()
    collector = PgtaskqCollector(
        lambda: tq.connect(application_name=APPLICATION_NAME.format(pid=os.getpid())),
        tq.schema)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server, _thread = start_http_server(port, addr=bind, registry=registry)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {bind}:{port}: {exc.strerror}") from None
    host, bound_port = server.server_address[:2]
    click.echo(f"pgtaskq metrics: serving schema {tq.schema} at "
               f"http://{host}:{bound_port}/metrics", err=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
