"""What every ``pgtaskq`` command shares: the global options and the error policy.

The group stores ``--dsn`` and ``--schema`` once in a :class:`CliContext`; commands take it
(or the TaskQueue it builds) through :data:`pass_cli` / :data:`pass_queue` instead of
repeating the options. User errors (a bad or unreachable DSN, a missing schema, invalid
input) become one ``Error: ...`` line on stderr and a non-zero exit: an operator at a shell
needs the reason, not a traceback. Programming errors still show their traceback.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click
import psycopg

from pgtaskq.errors import PgtaskqError, first_line
from pgtaskq.queue import TaskQueue
from pgtaskq.sql import validate_schema_name

F = TypeVar("F", bound=Callable[..., Any])


class CliContext:
    """The group's options; builds the TaskQueue the first time a command asks for it."""

    def __init__(self, dsn: str | None, schema: str, *, prepare: bool | None = None) -> None:
        self.dsn = dsn
        self.schema = schema
        self.prepare = prepare
        """False with ``--no-prepare``; None leaves it to ``$PGTASKQ_PREPARE``."""
        self._queue: TaskQueue | None = None

    def queue(self) -> TaskQueue:
        """A TaskQueue for ``--dsn``/``--schema`` (validated, not yet connected)."""
        if self._queue is None:
            if not self.dsn:
                raise click.ClickException(
                    "no database configured: pass --dsn or set PGTASKQ_DSN"
                )
            self._queue = TaskQueue(
                self.dsn, schema=validate_schema_name(self.schema), pool_max_size=2,
                prepare=self.prepare,
            )
        return self._queue

    def installed_queue(self) -> TaskQueue:
        """The TaskQueue, after checking its schema is installed and current."""
        queue = self.queue()
        queue.check_installed()
        return queue

    def close(self) -> None:
        if self._queue is not None:
            self._queue.close()


pass_cli = click.make_pass_decorator(CliContext)
"""Decorator: the command receives the :class:`CliContext` as first argument."""


def pass_queue(func: F) -> F:
    """Decorator: the command receives an installed, current TaskQueue as first argument."""

    @pass_cli
    @functools.wraps(func)
    def wrapper(cli_context: CliContext, *args: Any, **kwargs: Any) -> Any:
        return func(cli_context.installed_queue(), *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn validation errors (``ValueError``/``TypeError``) into one-line CLI errors.

    Wrap only calls whose ValueError/TypeError means bad input (enqueue options, say), so
    a genuine bug elsewhere keeps its traceback.
    """
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise click.ClickException(first_line(exc)) from exc


class PgtaskqGroup(click.Group):
    """A click group that reports pgtaskq and database errors in one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PgtaskqError as exc:
            raise click.ClickException(first_line(exc)) from exc
        except psycopg.Error as exc:
            raise click.ClickException(f"database error: {first_line(exc)}") from exc
