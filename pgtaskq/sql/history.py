"""Retention: delete finished jobs and old rollups in small batches.

Each statement deletes at most ``limit`` rows picked through an index and commits on its
own (the caller is in autocommit), so pruning a backlog of millions of rows never holds a
long transaction (which would pin the xmin horizon and bloat the hot ``jobs`` table, see
DESIGN.md lesson 1) nor more than row locks. ``SKIP LOCKED`` lets every worker prune at the
same time without waiting on one another.
"""

from __future__ import annotations

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
