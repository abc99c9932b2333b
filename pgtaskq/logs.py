"""Logging for command-line processes: one line per event on stderr, no colours.

Under systemd, journald adds its own timestamps, but a worker run by hand or in a
container wants them, so every line carries an ISO time, the level and the process id.
Library code only calls ``logging.getLogger("pgtaskq...")``; configuring handlers is left
to the program, which for ``pgtaskq worker`` is this module.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"


def configure(level: str = "INFO") -> None:
    """Send pgtaskq's log records to stderr at ``level`` (idempotent).

    psycopg's own warnings (the pool discarding a connection the server closed) get the
    same one-line format at WARNING, instead of Python's bare last-resort output.
    """
    for name, logger_level in (("pgtaskq", level.upper()), ("psycopg", "WARNING")):
        logger = logging.getLogger(name)
        logger.setLevel(logger_level)
        if not any(getattr(h, "_pgtaskq", False) for h in logger.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%dT%H:%M:%S"))
            handler._pgtaskq = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
            logger.propagate = False
