"""``apps.review_app`` with the worker modules' wall clock 5 s ahead of the database's:
what a worker host whose clock drifted sees (tests/test_review_findings.py)."""

from __future__ import annotations

import time as _time

import pgtaskq.worker.claimer
import pgtaskq.worker.due
import pgtaskq.worker.loop
import pgtaskq.worker.main
from apps.review_app import tq  # noqa: F401 - the app the worker runs

SKEW = 5.0


class _SkewedClock:
    def __getattr__(self, name: str) -> object:
        return getattr(_time, name)

    @staticmethod
    def time() -> float:
        return _time.time() + SKEW


for _module in (pgtaskq.worker.main, pgtaskq.worker.loop, pgtaskq.worker.claimer,
                pgtaskq.worker.due):
    _module.time = _SkewedClock()  # type: ignore[attr-defined]
