"""Statements on the task registry and on parked jobs (schema version 6, issue 12).

A job is *parked* (``jobs.parked``) while no claim could take it: it is not due yet, or no
live worker registers its task. Parked jobs stay ``queued`` for every reader but are out
of the ready indexes, so a claim's cost never depends on them. Workers publish their tasks
in ``worker_tasks``; ``SWEEP`` parks what blocks the head of ``jobs_ready``; ``UNPARK``
and ``NEXT_UNPARK`` let a worker take back the due parked jobs of its own tasks.
"""

from __future__ import annotations

LIVE_TASKS = """
SELECT DISTINCT t.task FROM {schema}.worker_tasks AS t
JOIN {schema}.workers AS w ON w.id = t.worker_id
WHERE w.stopped_at IS NULL
  AND w.last_heartbeat_at >= now() - make_interval(
      secs => greatest(%(lost_beats)s * w.heartbeat_interval, %(lost_min)s::double precision))
"""
"""Tasks some live worker registers (a worker silent for ``lost_beats`` heartbeat intervals
is not live: its tasks' jobs may be parked)."""

SWEEP = """
WITH live AS MATERIALIZED (""" + LIVE_TASKS + """
), head AS MATERIALIZED (
    -- what the next claims would walk first: the head of jobs_ready in claim order
    SELECT j.id, j.task, j.run_at FROM {schema}.jobs AS j
    WHERE j.status = 'queued' AND NOT j.parked
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT %(window)s
), blocking AS MATERIALIZED (
    -- the window's rows by primary key. With the statistics expecting few ready jobs (taken
    -- while most were parked), a join or IN of head with jobs was planned as a walk of the
    -- whole ready index, once per head row: 20,000 x 1,000 rows, seconds of CPU per sweep.
    -- "parked IS FALSE" (the column is NOT NULL: the same as NOT parked) does not match the
    -- ready indexes' predicate, which leaves the planner the primary key alone.
    SELECT j.id FROM {schema}.jobs AS j
    WHERE j.id = ANY (ARRAY(SELECT h.id FROM head AS h
                            WHERE h.run_at > now() OR h.task NOT IN (SELECT task FROM live)))
      AND j.status = 'queued' AND j.parked IS FALSE
    ORDER BY j.id
    FOR UPDATE SKIP LOCKED
), parked AS (
    UPDATE {schema}.jobs AS j SET parked = true
    FROM blocking AS b WHERE j.id = b.id
    RETURNING j.task, j.run_at > now() AS deferred
)
SELECT task, deferred, count(*) AS parked FROM parked GROUP BY task, deferred
"""
"""Park the jobs among the first ``window`` of ``jobs_ready`` that no claim can take now:
not due yet, or of a task no live worker registers. Run until it parks nothing; each
round reads ``window`` index entries, so a sweep that finds nothing to do is cheap."""

UNPARK = """
WITH due AS MATERIALIZED (
    SELECT j.id FROM {schema}.jobs AS j
    WHERE j.parked AND j.task = ANY(%(tasks)s::text[]) AND j.run_at <= now()
    ORDER BY j.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), unparked AS (
    UPDATE {schema}.jobs AS j SET parked = false
    FROM due AS d WHERE j.id = d.id
    RETURNING j.queue
), wake AS (
    SELECT pg_notify(%(channel)s, 'q:' || queue) FROM (SELECT DISTINCT queue FROM unparked) q
)
SELECT count(*) AS unparked FROM unparked, (SELECT count(*) FROM wake) AS notified
"""
"""Put the due parked jobs of ``tasks`` (this worker's) back in the ready indexes, and wake
the workers of their queues. One range of ``jobs_parked`` (task, run_at) per task."""

NEXT_UNPARK = """
SELECT extract(epoch FROM min(first.run_at) - clock_timestamp())::double precision
FROM unnest(%(tasks)s::text[]) AS t(task)
CROSS JOIN LATERAL (
    SELECT j.run_at FROM {schema}.jobs AS j
    WHERE j.parked AND j.task = t.task ORDER BY j.run_at LIMIT 1
) AS first
"""
"""Seconds until the earliest parked job of ``tasks`` is due (negative: due now; NULL:
none). One probe of ``jobs_parked`` per task."""

WAITING_FOR_A_WORKER = """
WITH live AS MATERIALIZED (""" + LIVE_TASKS + """
)
SELECT j.task, count(*), min(j.run_at)
FROM {schema}.jobs AS j
WHERE j.parked AND j.run_at <= now() AND j.task NOT IN (SELECT task FROM live)
GROUP BY j.task
ORDER BY count(*) DESC, j.task
"""
"""Due jobs parked because no live worker registers their task, per task: ``check`` names
them on a line of their own, and they never count as a backlog."""
