"""Read-only statements behind ``pgtaskq metrics`` (the Prometheus exporter).

Counters must only grow, so the exporter sums the ``stats_minute`` rollups of a range of
minutes itself (``pgtaskq.operations.metrics.RollupTotals``): each closed minute is read once, the
open ones again at every scrape. A range is a primary-key range scan of a few minutes.
"""

from __future__ import annotations

MINUTE = "SELECT date_trunc('minute', now())"

ROLLUP_TOTALS = """
WITH picked AS (
    SELECT * FROM {schema}.stats_minute
    WHERE minute >= %(from)s AND (%(to)s::timestamptz IS NULL OR minute < %(to)s::timestamptz)
), counts AS (
    SELECT queue, task, sum(succeeded)::bigint AS succeeded, sum(failed)::bigint AS failed,
           sum(retried)::bigint AS retried, sum(cancelled)::bigint AS cancelled
    FROM picked GROUP BY queue, task
), buckets AS (
    SELECT queue, task, h.i, sum(h.wait)::bigint AS wait, sum(h.run)::bigint AS run
    FROM picked, unnest(wait_ms_histogram, run_ms_histogram) WITH ORDINALITY AS h(wait, run, i)
    GROUP BY queue, task, h.i
), histograms AS (
    SELECT queue, task, array_agg(coalesce(wait, 0) ORDER BY i) AS wait,
           array_agg(coalesce(run, 0) ORDER BY i) AS run
    FROM buckets GROUP BY queue, task
)
SELECT c.queue, c.task, c.succeeded, c.failed, c.retried, c.cancelled, h.wait, h.run
FROM counts c LEFT JOIN histograms h USING (queue, task)
"""
"""Per (queue, task): attempts that succeeded, failed for good, were retried, were
cancelled, and the wait and run histograms (``pgtaskq.histogram`` buckets), summed over
the minutes in ``[from, to)`` (``to`` NULL: up to now)."""
