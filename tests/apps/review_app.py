"""Tasks for tests/test_review_findings.py: results that break JSON encoding."""

from __future__ import annotations

from pgtaskq import TaskQueue

tq = TaskQueue()


class _Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


@tq.task(name="deep_result", max_attempts=1)
def deep_result():
    nested: list = []
    for _ in range(100_000):  # json.dumps raises RecursionError, not TypeError
        nested = [nested]
    return nested


@tq.task(name="unprintable_result", max_attempts=1)
def unprintable_result():
    return _Unprintable()  # not JSON-serialisable, and its repr raises


@tq.task(name="plain")
def plain(value=None):
    return value
