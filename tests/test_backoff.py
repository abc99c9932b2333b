"""``pgtaskq.backoff.Backoff``: the pause after consecutive failures."""

from __future__ import annotations

from pgtaskq.backoff import Backoff


def test_doubles_from_first_up_to_cap_and_resets():
    backoff = Backoff(0.2, 1.0)
    assert [backoff.failed() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.failures == 5
    assert backoff.succeeded() is True  # the end of a run of failures
    assert backoff.succeeded() is False
    assert backoff.failed() == 0.2
