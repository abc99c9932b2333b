"""RQ side: the job function that ``rq worker-pool`` workers import."""

from __future__ import annotations

from benchmarks import body


def record(n: int) -> None:
    body.record(n)
