"""Retention: delete finished jobs and old rollups in small batches.

Each statement deletes at most ``limit`` rows picked through an index and commits on its
own (the caller is in autocommit), so pruning a backlog of millions of rows never holds a
long transaction (which would pin the xmin horizon and bloat the hot ``jobs`` table, see
DESIGN.md lesson 1) nor more than row locks. ``SKIP LOCKED`` lets every worker prune at the
same time without waiting on one another.
"""

from __future__ import annotations

from pgtaskq.sql import fragments

PRUNE_HISTORY = """
WITH doomed AS (
    SELECT id FROM {schema}.job_history
    WHERE status = %(status)s
      AND finished_at < now() - make_interval(secs => %(older_than)s::double precision)
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM {schema}.job_history h USING doomed d WHERE h.id = d.id
    RETURNING 1
)
SELECT count(*) FROM deleted
"""
"""Delete up to ``limit`` finished jobs of one status older than ``older_than`` seconds,
oldest first, through the ``job_history_status_finished`` index."""

PRUNE_STATS = """
WITH doomed AS (
    SELECT minute, queue, task, worker_id FROM {schema}.stats_minute
    WHERE minute < now() - make_interval(secs => %(older_than)s::double precision)
    ORDER BY minute
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM {schema}.stats_minute s USING doomed d
    WHERE (s.minute, s.queue, s.task, s.worker_id) = (d.minute, d.queue, d.task, d.worker_id)
    RETURNING 1
)
SELECT count(*) FROM deleted
"""
"""Delete up to ``limit`` rollup rows older than ``older_than`` seconds (primary key order)."""

FOLD_STATS = """
WITH picked AS (
    SELECT ctid FROM {schema}.stats_minute
    WHERE minute < now() - make_interval(secs => %(older_than)s::double precision)
      AND worker_id <> 0
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    DELETE FROM {schema}.stats_minute s USING picked p WHERE s.ctid = p.ctid
    RETURNING s.*
), counts AS (
    SELECT minute, queue, task, sum(succeeded) AS succeeded, sum(failed) AS failed,
           sum(retried) AS retried, sum(cancelled) AS cancelled
    FROM moved GROUP BY minute, queue, task
), buckets AS (
    SELECT m.minute, m.queue, m.task, h.i, sum(h.wait)::integer AS wait,
           sum(h.run)::integer AS run
    FROM moved m,
         unnest(m.wait_ms_histogram, m.run_ms_histogram) WITH ORDINALITY AS h(wait, run, i)
    GROUP BY m.minute, m.queue, m.task, h.i
), histograms AS (
    SELECT minute, queue, task, array_agg(coalesce(wait, 0) ORDER BY i) AS wait,
           array_agg(coalesce(run, 0) ORDER BY i) AS run
    FROM buckets GROUP BY minute, queue, task
), folded AS (
    INSERT INTO {schema}.stats_minute AS s
        (minute, queue, task, worker_id, succeeded, failed, retried, cancelled,
         wait_ms_histogram, run_ms_histogram)
    SELECT c.minute, c.queue, c.task, 0, c.succeeded, c.failed, c.retried, c.cancelled,
           coalesce(h.wait, '{{}}'), coalesce(h.run, '{{}}')
    FROM counts c LEFT JOIN histograms h USING (minute, queue, task)
    ORDER BY c.minute, c.queue, c.task
""" + fragments.MERGE_ROLLUP + """
)
SELECT count(*) FROM moved
"""
"""Fold up to ``limit`` per-worker rollup rows older than ``older_than`` seconds into the
worker-0 row of their (minute, queue, task); returns how many were folded.

Completers write one row per worker (no lock contention between them), but once a minute
is over nobody needs the split: every figure of ``stats`` sums over workers, except the
workers' "done in the last minute". Folding divides the rollups' size by the number of
workers (with 20 workers and 50 tasks, two days of unfolded rows would be about 3 million
rows of 650 bytes). Sums are unchanged, so ``stats`` reads the same figures before and
after."""

PRUNE_TRACE_CONTEXT = """
WITH doomed AS (
    SELECT t.job_id FROM {schema}.job_trace_context t
    WHERE t.created_at < now() - interval '1 minute'
      AND NOT EXISTS (SELECT FROM {schema}.jobs j WHERE j.id = t.job_id)
    ORDER BY t.job_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM {schema}.job_trace_context t USING doomed d WHERE t.job_id = d.job_id
    RETURNING 1
)
SELECT count(*) FROM deleted
"""
"""Delete up to ``limit`` trace contexts of jobs no longer in ``jobs`` (finished). A
retried job is still in ``jobs`` between attempts, so each attempt continues the trace."""
