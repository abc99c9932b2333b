"""Logging for command-line processes: one line per event on stderr, no colours.

Under systemd, journald adds its own timestamps, but a worker run by hand or in a
container wants them, so every line carries an ISO time, the level and the process id.
Library code only calls ``logging.getLogger("pgtaskq...")``; configuring handlers is left
to the program, which for ``pgtaskq worker`` is this module.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s pgtaskq[%(process)d] %(message)s"


def configure(level: str = "INFO") -> None:
    """Send pgtaskq's log records to stderr at ``level`` (idempotent)."""
    logger = logging.getLogger("pgtaskq")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_pgtaskq", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT, "%Y-%m-%dT%H:%M:%S"))
        handler._pgtaskq = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
