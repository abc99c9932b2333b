"""Django settings with a ``LOGGING`` dict, for the worker logging tests.

pgtaskq's loggers go to the project's console handler at WARNING without propagating, the
root logger to the same handler at WARNING: a worker must print each pgtaskq line once, in
the project's format, and nothing below WARNING.
"""

from __future__ import annotations

import os

from djangotest_settings import build

globals().update(build(os.environ["PGTASKQ_DSN"]))
PGTASKQ = {"DATABASE": "default", "TASK_MODULES": ["apps.django_logged"]}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"project": {"format": "DJANGOLOG %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "project"}},
    "loggers": {"pgtaskq": {"handlers": ["console"], "level": "WARNING",
                            "propagate": False}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
