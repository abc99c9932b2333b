"""``pgtaskq.worker.capacity``: how many jobs a worker leases, without PostgreSQL."""

from __future__ import annotations

import pytest

from pgtaskq.worker.capacity import (
    MAX_UNACKNOWLEDGED,
    PREFETCH_HORIZON,
    PREFETCH_MAX_PER_SLOT,
    Capacity,
)


def test_no_prefetch_until_a_job_has_finished():
    capacity = Capacity(4)
    assert capacity.prefetch_now == 0
    assert capacity.total == 4 == capacity.room() == capacity.free()
    assert capacity.refill_at == 1


def test_adaptive_prefetch_follows_the_job_duration():
    capacity = Capacity(8)
    capacity.claimed(1, 8)
    capacity.finished(PREFETCH_HORIZON / 4)  # 4 jobs per slot within the horizon
    assert capacity.prefetch_now == 8 * 4
    assert capacity.refill_at == 16
    capacity.claimed(1, 8)
    capacity.finished(0.0)  # the moving average moves a tenth of the way
    assert capacity.prefetch_now == int(8 * PREFETCH_HORIZON / (0.9 * PREFETCH_HORIZON / 4))


def test_adaptive_prefetch_is_capped_per_slot_and_none_for_long_jobs():
    capacity = Capacity(2)
    capacity.claimed(1, 2)
    capacity.finished(0.0)
    assert capacity.prefetch_now == PREFETCH_MAX_PER_SLOT * 2
    slow = Capacity(2)
    slow.claimed(1, 2)
    slow.finished(1.0)
    assert slow.prefetch_now == 0
    assert slow.total == 2


def test_fixed_prefetch():
    capacity = Capacity(3, prefetch=5)
    assert capacity.total == 8
    capacity.claimed(1, 8)
    capacity.finished(0.0)
    assert capacity.prefetch_now == 5
    assert capacity.refill_at == 2


def test_room_shrinks_with_outstanding_and_unacknowledged_jobs():
    held = [0]
    capacity = Capacity(4, prefetch=0, held=lambda: held[0])
    capacity.claimed(3, 4)
    held[0] = 3
    assert capacity.outstanding == 3
    assert capacity.room() == 1 == capacity.free()
    # every job finished, none written yet: room shrinks only past MAX_UNACKNOWLEDGED
    for _ in range(3):
        capacity.finished(0.01)
    held[0] = MAX_UNACKNOWLEDGED + 2
    assert capacity.free() == 4
    assert capacity.room() == 4 - 2


def test_a_full_claim_means_a_backlog_and_one_wake_per_refill():
    capacity = Capacity(4, prefetch=0)
    capacity.claimed(4, 4)  # full: there is probably more
    assert not capacity.refill_due()
    assert capacity.finished(0.01) is True  # room for a refill: wake the main loop
    assert capacity.refill_due()
    assert capacity.finished(0.01) is False  # already woken, not yet served
    capacity.woke()
    assert capacity.finished(0.01) is True


def test_a_short_claim_means_no_backlog():
    capacity = Capacity(4, prefetch=0)
    capacity.claimed(2, 4)
    assert capacity.finished(0.01) is False
    assert not capacity.refill_due()
    capacity.note_backlog()  # work seen while full
    assert capacity.refill_due()


def test_waiting_for_the_completer():
    held = [0]
    capacity = Capacity(2, prefetch=0, held=lambda: held[0])
    capacity.claimed(2, 2)
    capacity.finished(0.01)
    capacity.finished(0.01)
    held[0] = MAX_UNACKNOWLEDGED + 2  # slots free, but the completer is far behind
    assert capacity.free() == 2 and capacity.room() == 0
    assert capacity.waiting_for_completer()
    held[0] = 0
    assert not capacity.waiting_for_completer()


def test_a_dropped_job_frees_capacity_without_counting_as_run():
    capacity = Capacity(2)
    capacity.claimed(2, 2)
    capacity.dropped()
    assert capacity.outstanding == 1
    assert capacity.prefetch_now == 0  # no duration learnt from it


@pytest.mark.parametrize("outstanding_after, wakes", [(0, True), (1, False)])
def test_on_finished_may_wake_the_loop(outstanding_after, wakes):
    seen = []

    def on_finished(outstanding: int) -> bool:
        seen.append(outstanding)
        return outstanding == 0

    capacity = Capacity(2, prefetch=0, on_finished=on_finished)
    capacity.claimed(1 + outstanding_after, 4)  # not full: no refill wake-up
    assert capacity.finished(0.01) is wakes
    assert seen == [outstanding_after]
