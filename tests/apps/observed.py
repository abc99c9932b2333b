"""Tasks with outcome hooks and Sentry, for tests/test_hooks.py.

Hooks append one JSON line per call to ``$OBSERVED_HOOKS_FILE``. Sentry is initialised
with a transport that records every event in ``$OBSERVED_SENTRY_FILE`` instead of sending
it (the real sentry-sdk builds the events; only the network is left out).
"""

from __future__ import annotations

import json
import logging
import os

import sentry_sdk
from sentry_sdk.transport import Transport

from pgtaskq import Retry, TaskQueue, current_job
from pgtaskq.contrib import sentry as pgtaskq_sentry


class RecordingTransport(Transport):
    """Writes each event of each envelope as one JSON line."""

    def capture_envelope(self, envelope) -> None:
        event = envelope.get_event()
        if event is not None:
            with open(os.environ["OBSERVED_SENTRY_FILE"], "a") as out:
                out.write(json.dumps(event, default=str) + "\n")


sentry_sdk.init(dsn="https://key@sentry.invalid/1", transport=RecordingTransport,
                default_integrations=False)

tq = TaskQueue()
pgtaskq_sentry.instrument(tq)


def _record(hook: str, job, value) -> None:
    assert current_job() is job  # hooks run while the job is current
    line = {"hook": hook, "job_id": job.id, "attempt": job.attempt, "value": repr(value)}
    with open(os.environ["OBSERVED_HOOKS_FILE"], "a") as out:
        out.write(json.dumps(line) + "\n")


@tq.on_success
def succeeded(job, result):
    _record("success", job, result)


@tq.on_retry
def retried(job, error):
    _record("retry", job, error)


@tq.on_failure
def failed(job, error):
    _record("failure", job, error)


@tq.on_failure
def broken_hook(job, error):
    raise ValueError("a broken hook must not change the outcome")


@tq.task(name="observed.ok")
def ok(value):
    return value * 2


@tq.task(name="observed.fail", max_attempts=2)
def fail(message):
    logging.getLogger("apps.observed").info("about to fail")
    raise RuntimeError(message)


@tq.task(name="observed.retry_once", max_attempts=3)
def retry_once():
    if current_job().attempt == 1:
        raise Retry(delay=0.05)
    return "second time"
