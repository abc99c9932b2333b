"""One bad outcome never wedges the completer (``pgtaskq.worker.completer``)."""

from __future__ import annotations

import pytest
from worker_helpers import (
    FAST,
    status_of,
)

from pgtaskq.testing import wait_until

APP = "apps.basic:tq"


# -- one bad outcome must not wedge the completer ---------------------------------------------


@pytest.mark.parametrize("delay", ["inf", "nan"])
def test_retry_with_an_infinite_delay_does_not_wedge_the_completer(tq, worker_process, delay):
    """``Retry(delay=float('inf'))`` (or nan) passes Retry's check (not < 0); COMPLETE's
    now() + make_interval(secs => inf) raises "interval out of range", the whole batch
    fails, and the completer retries that batch for ever: every job of the batch stays
    'running' (heartbeated), and the worker stops leasing once outcomes pile up."""
    worker = worker_process("apps.review_app:tq", "-c", "1", *FAST)
    worker.wait_ready()
    bad = tq.enqueue("retry_forever", args=[delay])
    after = tq.enqueue("plain", args=[1])
    wait_until(lambda: status_of(tq, after) == "succeeded", 10, what="next outcome written")
    if delay == "inf":  # queued again, for "never" (about 31 years)
        job = wait_until(lambda: (j := tq.get_job(bad)).status == "queued" and j, 10)
        assert (job.attempts, job.run_at.year >= 2050) == (1, True)
    else:  # nan: the backoff applies, and the attempts run out
        wait_until(lambda: status_of(tq, bad) == "failed", 10, what="retries used up")
    assert worker.stop() == 0


@pytest.mark.parametrize("task", ["nul_result", "nul_error"])
def test_outcome_with_a_nul_character_does_not_wedge_the_completer(tq, worker_process, task):
    worker = worker_process("apps.review_app:tq", "-c", "1", *FAST)
    worker.wait_ready()
    bad = tq.enqueue(task, max_attempts=1)  # by name: the app's max_attempts is not known here
    after = tq.enqueue("plain", args=[1])
    wait_until(lambda: status_of(tq, after) == "succeeded", 10, what="next outcome written")
    wait_until(lambda: status_of(tq, bad) in ("succeeded", "failed"), 10, what="bad stored")
    if task == "nul_error":
        assert "b\\x00d" in tq.get_job(bad).last_error  # NUL shown escaped, not lost
    assert worker.stop() == 0
