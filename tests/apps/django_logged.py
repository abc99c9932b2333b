"""Native tasks of the Django project whose settings are ``djangotest_logging_settings``."""

from __future__ import annotations

import logging

from pgtaskq.contrib.django import get_queue

tq = get_queue()
log = logging.getLogger("apps.django_logged")


@tq.task(name="logged.ok")
def ok(value=None):
    log.warning("inside the job, value %s", value)
    return value


@tq.task(name="logged.fail", max_attempts=2)
def fail(message="kaput"):
    raise RuntimeError(message)
