"""Tasks for the tests of workers that stop by themselves (--burst, --max-jobs, ...)."""

from __future__ import annotations

from pgtaskq import TaskQueue

tq = TaskQueue()

_kept: list[bytearray] = []


@tq.task(name="noop")
def noop(value=None):
    return value


@tq.task(name="hog")
def hog(mib):
    """Leaks ``mib`` MiB for good, as a leaky task does."""
    block = bytearray(mib * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page: resident, not just mapped
    _kept.append(block)
    return len(_kept)
