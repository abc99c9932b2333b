"""Outcome hooks and the Sentry integration, in a real worker with the real sentry-sdk.

``tests/apps/observed.py`` registers ``on_success``/``on_retry``/``on_failure`` hooks that
write to a file, and initialises sentry-sdk with a transport that records events in another
file instead of sending them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from worker_helpers import FAST

from pgtaskq import TaskQueue
from pgtaskq.testing import wait_until

pytest.importorskip("sentry_sdk", reason="pip install 'pgtaskq[sentry]' (or the dev extra)")


def _lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def _done(tq: TaskQueue, *ids: int) -> bool:
    return all(tq.get_job(i).status in ("succeeded", "failed") for i in ids)


@pytest.fixture
def observed(tq, worker_process, tmp_path):
    files = {"hooks": tmp_path / "hooks.jsonl", "sentry": tmp_path / "sentry.jsonl"}
    ok = tq.enqueue("observed.ok", args=[21])
    # enqueued by name from a process without the tasks: their max_attempts explicitly
    bad = tq.enqueue("observed.fail", args=["kaput"], max_attempts=2)
    retried = tq.enqueue("observed.retry_once", max_attempts=3)
    worker = worker_process("apps.observed:tq", *FAST, env={
        "OBSERVED_HOOKS_FILE": str(files["hooks"]),
        "OBSERVED_SENTRY_FILE": str(files["sentry"])})
    wait_until(lambda: _done(tq, ok, bad, retried) or worker.process.poll() is not None,
               30, what="jobs finished")
    assert worker.stop() == 0, worker.output()
    return files, ok, bad, retried, worker.output()


def test_hooks_hear_each_outcome(tq, observed) -> None:
    files, ok, bad, retried, output = observed
    calls = [(c["hook"], c["job_id"], c["attempt"], c["value"])
             for c in _lines(files["hooks"])]
    assert sorted(calls) == sorted([
        ("success", ok, 1, "42"),
        ("retry", bad, 1, "RuntimeError('kaput')"),
        ("failure", bad, 2, "RuntimeError('kaput')"),
        ("retry", retried, 1, "Retry('retry requested in 0.05s')"),
        ("success", retried, 2, "'second time'"),
    ]), calls
    # the broken hook is logged, and the outcome stands
    assert "hook broken_hook raised" in output
    assert tq.get_job(bad).status == "failed" and tq.get_job(ok).result == 42


def test_failed_attempts_reach_sentry_with_job_tags(tq, observed) -> None:
    files, _ok, bad, _retried, _ = observed
    events = _lines(files["sentry"])
    assert len(events) == 2, events  # the two attempts of the failing job, nothing else
    for attempt, event in enumerate(events, start=1):
        assert event["tags"] == {"pgtaskq.task": "observed.fail", "pgtaskq.job_id": str(bad),
                                 "pgtaskq.attempt": str(attempt), "pgtaskq.queue": "default"}
        value = event["exception"]["values"][-1]
        assert (value["type"], value["value"]) == ("RuntimeError", "kaput")
        assert value["mechanism"] == {"type": "pgtaskq", "handled": False}
        assert event["contexts"]["pgtaskq"]["max_attempts"] == 2
        assert event["transaction"] == "observed.fail"
    assert [e["level"] for e in events] == ["warning", "error"]
