"""Slot threads survive whatever a task returns (``pgtaskq.worker.slots``)."""

from __future__ import annotations

import pytest
from worker_helpers import (
    FAST,
    status_of,
)

from pgtaskq.testing import wait_until

APP = "apps.basic:tq"


# -- slot threads must survive whatever a task returns ---------------------------------------


@pytest.mark.parametrize("task", ["deep_result", "unprintable_result"])
def test_result_that_breaks_json_does_not_kill_the_slot(tq, worker_process, task):
    worker = worker_process("apps.review_app:tq", "-c", "1", *FAST)
    worker.wait_ready()
    bad = tq.enqueue(task)
    wait_until(lambda: status_of(tq, bad) in ("succeeded", "failed"), 10,
               what=f"{task} job finished")
    after = tq.enqueue("plain", args=[1])
    wait_until(lambda: status_of(tq, after) == "succeeded", 10,
               what="next job on the same (only) slot")
    assert worker.stop() == 0
