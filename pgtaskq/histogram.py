"""Fixed latency buckets: the completer files each wait and run time into one, stats reads
percentiles back out.

Why fixed buckets: rollups from many workers and minutes must add up, and a histogram with
the same bucket bounds everywhere is summed element by element (a t-digest or a sample is
not). Bounds grow by a factor of sqrt(2) from 1/16 ms to about 52 hours, so 64 integers
cover every realistic latency and a percentile read from them is within about 20% of the
true value, plenty to tell 5 ms from 50 ms or a backlog of seconds from one of minutes.

Bucket ``i`` holds values in ``(upper(i - 1), upper(i)]`` with ``upper(i) = 2 ** ((i - 8)
/ 2)`` ms; bucket 0 also holds everything below, the last one everything above. The SQL
side (``histogram`` aggregate in the schema) only counts bucket numbers computed here.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

BUCKETS = 64
"""Number of buckets; the schema's ``histogram`` aggregate starts from this many zeros."""

_OFFSET = 8  # bucket 8 ends at exactly 1 ms


def upper(index: int) -> float:
    """Upper bound, in ms, of bucket ``index``."""
    return 2.0 ** ((index - _OFFSET) / 2)


_UPPERS = [upper(i) for i in range(BUCKETS - 1)]


def bucket(ms: float) -> int:
    """The bucket a duration of ``ms`` milliseconds falls into.

    A binary search over the bounds (C code): the completer calls this twice per job.
    """
    if ms != ms:  # NaN
        return 0
    return bisect.bisect_left(_UPPERS, ms)


def add(total: list[int], counts: Sequence[int] | None) -> list[int]:
    """Add ``counts`` into ``total`` in place (arrays may differ in length); return it."""
    if counts:
        if len(total) < len(counts):
            total.extend([0] * (len(counts) - len(total)))
        for i, n in enumerate(counts):
            if n:
                total[i] += n
    return total


def merged(histograms: Iterable[Sequence[int] | None]) -> list[int]:
    """Element-wise sum of histograms."""
    total: list[int] = []
    for counts in histograms:
        add(total, counts)
    return total


def percentile(counts: Sequence[int], q: float) -> float | None:
    """Estimate the ``q``-quantile (0 < q <= 1) in ms; None for an empty histogram.

    Interpolates geometrically inside the bucket where the cumulative count crosses
    ``q * total`` (the buckets are geometric, so this is the unbiased choice).
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, n in enumerate(counts):
        if n and seen + n >= rank:
            low = upper(index - 1) if index > 0 else upper(0) / 2
            high = upper(index) if index < BUCKETS - 1 else upper(index) * 2
            fraction = (rank - seen) / n
            return low * (high / low) ** fraction
        seen += n
    return upper(len(counts) - 1)
