"""``manage.py pgtaskq COMMAND ...``: the ``pgtaskq`` command line, configured by Django.

Every command of ``pgtaskq`` works here with the same options (``worker``, ``stats``,
``install``, ``upgrade``, ``jobs``, ``show``, ...); the DSN and schema come from
``settings.PGTASKQ`` (or the database it names) instead of ``--dsn``/``--schema``, and
``worker`` takes no APP argument: it serves the project's tasks, found in every installed
app's ``tasks`` module, with Django's connection housekeeping around each job.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError

# Django's ManagementUtility has already applied these; click must not see them.
_DJANGO_GLOBAL_OPTIONS = ("--settings", "--pythonpath")


def _without_django_options(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _DJANGO_GLOBAL_OPTIONS:
            skip = True
            continue
        if arg.startswith(tuple(f"{opt}=" for opt in _DJANGO_GLOBAL_OPTIONS)):
            continue
        out.append(arg)
    return out


class Command(BaseCommand):
    help = (
        "pgtaskq's command line with the project's settings: worker, stats, install, "
        "upgrade, jobs, show, enqueue, cancel, retry, ... ('manage.py pgtaskq --help')."
    )
    # The worker manages its own connections; Django's checks need none of pgtaskq's.
    requires_system_checks: list[str] = []

    def run_from_argv(self, argv: list[str]) -> None:
        # Bypass argparse: every argument (``--help`` included) belongs to click.
        try:
            self.run(argv[2:])
        except CommandError as exc:
            self.stderr.write(f"Error: {exc}")
            sys.exit(exc.returncode)
        finally:
            from django.db import connections

            connections.close_all()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("pgtaskq_args", nargs=argparse.REMAINDER, metavar="COMMAND ...")

    def handle(self, *args: Any, pgtaskq_args: list[str], **options: Any) -> None:
        self.run(pgtaskq_args)

    def run(self, pgtaskq_args: list[str]) -> None:
        """Hand ``pgtaskq_args`` to pgtaskq's click group with the project's queue."""
        from pgtaskq.contrib.cli_bridge import run_cli
        from pgtaskq.contrib.django.conf import get_queue
        from pgtaskq.contrib.django.runner import prepare_worker_queue

        argv = _without_django_options(list(pgtaskq_args)) or ["--help"]
        queue = prepare_worker_queue() if argv[0] == "worker" else get_queue()
        prog = f"{os.path.basename(sys.argv[0])} pgtaskq"
        try:
            code = run_cli(
                queue, argv, worker_app="pgtaskq.contrib.django.runner:tq", prog_name=prog
            )
        except click.exceptions.Abort:
            raise CommandError("aborted") from None
        except click.ClickException as exc:
            raise CommandError(exc.format_message()) from exc
        if code:
            raise SystemExit(code)
