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


@tq.task(name="retry_forever", max_attempts=3)
def retry_forever(delay):
    from pgtaskq import Retry

    raise Retry(delay=float(delay))  # float("inf") / float("nan"): "never", "unknown"


@tq.task(name="nul_result", max_attempts=1)
def nul_result():
    return "binary\x00data"  # JSON "\u0000", which jsonb rejects


@tq.task(name="nul_error", max_attempts=1)
def nul_error():
    raise RuntimeError("bad record: b\x00d")  # NUL in the traceback text
