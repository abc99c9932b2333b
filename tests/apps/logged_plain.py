"""Tasks that log, succeed or fail, in an application that leaves logging unconfigured."""

from __future__ import annotations

import logging

from pgtaskq import TaskQueue

tq = TaskQueue()
log = logging.getLogger("apps.logged")


@tq.task(name="logged.ok")
def ok(value=None):
    log.warning("inside the job, value %s", value)
    return value


@tq.task(name="logged.fail", max_attempts=2)
def fail(message="kaput"):
    raise RuntimeError(message)
