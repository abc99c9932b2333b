"""Read-only statements behind ``pgtaskq stats`` and ``pgtaskq check``.

None of them counts a whole job table (DESIGN.md lesson 12): finished work comes from the
``stats_minute`` rollups (a primary-key range of at most an hour of rows), live work from
the partial indexes, or from a block sample when ``jobs`` is too large to count in a few
milliseconds. Filters are ``NULL``-able parameters so each statement has one text.
"""

from __future__ import annotations

CLOCK = """
SELECT now(), date_trunc('minute', now()),
       pg_relation_size(c.oid) / current_setting('block_size')::integer,
       c.reltuples, c.relpages
FROM pg_class c WHERE c.oid = %(jobs)s::regclass
"""
"""The statements' common ``now``, the current rollup minute, the jobs table's size in
pages now (decides between an exact count and a sample), and the planner's row count and
pages at the last ANALYZE (scales the sample, as the planner does)."""

FILTERS = """
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
"""

LIVE_EXACT = """
SELECT queue, task,
       count(*) FILTER (WHERE status = 'queued' AND run_at <= %(now)s) AS ready,
       count(*) FILTER (WHERE status = 'queued' AND run_at > %(now)s) AS scheduled,
       count(*) FILTER (WHERE status = 'running') AS running,
       min(run_at) FILTER (WHERE status = 'queued' AND run_at <= %(now)s) AS oldest_ready
FROM {schema}.jobs
WHERE true""" + FILTERS + """
GROUP BY queue, task
"""
"""Exact live counts: only used while ``jobs`` is small (a few thousand pages)."""

LIVE_SAMPLE = """
SELECT queue, task,
       count(*) FILTER (WHERE run_at <= %(now)s) AS ready,
       count(*) FILTER (WHERE run_at > %(now)s) AS scheduled,
       min(run_at) FILTER (WHERE run_at <= %(now)s) AS oldest_ready
FROM {schema}.jobs TABLESAMPLE SYSTEM (%(percent)s)
WHERE status = 'queued'""" + FILTERS + """
GROUP BY queue, task
"""
"""Queued rows in a block sample of ``percent`` % of ``jobs``; the caller scales counts by
``100 / percent``. Estimates, and said to be."""

RUNNING = """
SELECT queue, task, count(*) FROM {schema}.jobs
WHERE status = 'running'""" + FILTERS + """
GROUP BY queue, task
"""
"""Running jobs are at most the workers' total concurrency: exact, via ``jobs_running``."""

OLDEST_READY_BY_QUEUE = """
WITH RECURSIVE queues AS (
    (SELECT queue FROM {schema}.jobs WHERE status = 'queued' AND NOT parked ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM {schema}.jobs j
            WHERE j.status = 'queued' AND NOT j.parked AND j.queue > q.queue
            ORDER BY j.queue LIMIT 1)
    FROM queues q WHERE q.queue IS NOT NULL
), levels AS (
    SELECT q.queue,
           (SELECT j.priority FROM {schema}.jobs j WHERE j.status = 'queued' AND NOT j.parked
            AND j.queue = q.queue ORDER BY j.priority DESC LIMIT 1) AS priority
    FROM queues q WHERE q.queue IS NOT NULL
    UNION ALL
    SELECT l.queue,
           (SELECT j.priority FROM {schema}.jobs j WHERE j.status = 'queued' AND NOT j.parked
            AND j.queue = l.queue AND j.priority < l.priority
            ORDER BY j.priority DESC LIMIT 1)
    FROM levels l WHERE l.priority IS NOT NULL
), heads AS (
    SELECT l.queue,
           (SELECT j.run_at FROM {schema}.jobs j WHERE j.status = 'queued' AND NOT j.parked
            AND j.queue = l.queue AND j.priority = l.priority
            ORDER BY j.run_at LIMIT 1) AS run_at
    FROM levels l WHERE l.priority IS NOT NULL
)
SELECT queue, min(run_at) FILTER (WHERE run_at <= %(now)s) FROM heads GROUP BY queue
"""
"""Per queue, the run_at of the oldest ready job, exact at any size: a loose index scan on
``jobs_ready_by_queue`` (queue, priority DESC, run_at) probes each (queue, priority)
once, and the first entry of a priority is its oldest. Also lists every queue with
queued jobs."""

ROLLUP_COUNTS = """
SELECT queue, task,
       coalesce(sum(succeeded) FILTER (WHERE minute >= %(minute)s - interval '1 minute'), 0),
       coalesce(sum(succeeded) FILTER (WHERE minute >= %(minute)s - interval '5 minutes'), 0),
       coalesce(sum(succeeded), 0),
       coalesce(sum(failed) FILTER (WHERE minute >= %(minute)s - interval '1 minute'), 0),
       coalesce(sum(failed) FILTER (WHERE minute >= %(minute)s - interval '5 minutes'), 0),
       coalesce(sum(failed), 0),
       coalesce(sum(retried), 0),
       coalesce(sum(cancelled), 0),
       coalesce(sum(succeeded + failed + retried + cancelled)
                FILTER (WHERE minute >= %(minute)s - interval '1 minute'), 0)
FROM {schema}.stats_minute
WHERE minute >= %(minute)s - interval '60 minutes'""" + FILTERS + """
GROUP BY queue, task
"""
"""Counts per window: ``1m`` is the current minute so far plus the previous one, ``5m``
and ``1h`` likewise reach 5 and 60 whole minutes back (rollups have minute resolution)."""

ROLLUP_HISTOGRAMS = """
SELECT queue, task, array_agg(wait ORDER BY i), array_agg(run ORDER BY i)
FROM (SELECT queue, task, h.i, sum(h.wait)::integer AS wait, sum(h.run)::integer AS run
      FROM {schema}.stats_minute,
           unnest(wait_ms_histogram, run_ms_histogram) WITH ORDINALITY AS h(wait, run, i)
      WHERE minute >= %(minute)s - interval '5 minutes'""" + FILTERS + """
      GROUP BY queue, task, h.i) AS buckets
GROUP BY queue, task
"""
"""Latency histograms of the ``5m`` window per (queue, task), summed bucket by bucket in
the server: one row per task instead of one per task, minute and worker to adapt."""

ROLLUP_SERIES = """
SELECT queue, minute, sum(succeeded + failed + retried + cancelled)
FROM {schema}.stats_minute
WHERE minute >= %(minute)s - interval '59 minutes'""" + FILTERS + """
GROUP BY queue, minute
"""
"""Attempts finished per queue and minute over the last hour (the sparklines)."""

ROLLUP_BY_WORKER = """
SELECT worker_id, sum(succeeded + failed + retried + cancelled) FROM {schema}.stats_minute
WHERE minute >= %(minute)s - interval '1 minute'
GROUP BY worker_id
"""

LOST = """last_heartbeat_at < now() - make_interval(
    secs => greatest(%(lost_beats)s * heartbeat_interval, %(lost_min)s::double precision))"""
"""A worker silent for ``lost_beats`` of its own heartbeat intervals (``defaults``)."""

WORKERS = """
SELECT id, host, pid, queues, concurrency, busy_slots, stuck_slots, started_at,
       last_heartbeat_at, stopped_at,
       extract(epoch FROM %(now)s - last_heartbeat_at)::double precision,
       """ + LOST + """
FROM {schema}.workers
WHERE stopped_at IS NULL OR stopped_at > %(now)s - interval '1 hour'
ORDER BY stopped_at IS NOT NULL, id
LIMIT 100
"""
"""Registered workers, live first; stopped ones for an hour after they stopped."""

RECENT_FAILURES = """
SELECT id, task, queue, attempts, max_attempts, finished_at, last_error
FROM {schema}.job_history
WHERE status = 'failed' AND finished_at > %(now)s - interval '1 day'""" + FILTERS + """
ORDER BY finished_at DESC
LIMIT %(limit)s
"""
"""Newest failures of the last day, backwards along ``job_history_status_finished``."""

WORKERS_ALIVE = """
SELECT count(*) FILTER (WHERE NOT """ + LOST + """), count(*)
FROM {schema}.workers WHERE stopped_at IS NULL
"""

TABLE_HEALTH = """
SELECT c.relname, pg_stat_get_live_tuples(c.oid), pg_stat_get_dead_tuples(c.oid),
       extract(epoch FROM now() - greatest(pg_stat_get_last_autovacuum_time(c.oid),
                                           pg_stat_get_last_vacuum_time(c.oid)))
           ::double precision
FROM pg_class c
WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %(schema)s)
  AND c.relname IN ('jobs', 'job_history', 'stats_minute', 'workers')
ORDER BY c.relname
"""
"""Live and dead tuples and time since the last vacuum of pgtaskq's tables. Reads the
statistics functions for four catalog rows found by index: ``pg_stat_user_tables`` would
scan all of ``pg_class`` (48 ms in a database with many schemas)."""

OLDEST_XACT = """
SELECT * FROM (
    (SELECT 'session' AS holder, pid::text AS name, coalesce(usename, '') AS role,
            coalesce(state, '') AS state,
            extract(epoch FROM now() - xact_start)::double precision AS seconds,
            age(coalesce(backend_xmin, backend_xid)) AS xmin_age,
            left(coalesce(query, ''), 120) AS query
     FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()
       AND backend_type = 'client backend'
       AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
     ORDER BY xact_start LIMIT 1)
    UNION ALL
    (SELECT 'prepared transaction', gid, owner::text, 'prepared',
            extract(epoch FROM now() - prepared)::double precision, age(transaction), ''
     FROM pg_prepared_xacts WHERE database = current_database()
     ORDER BY prepared LIMIT 1)
    UNION ALL
    (SELECT 'replication slot', slot_name::text, '', CASE WHEN active THEN 'active'
            ELSE 'inactive' END, NULL, age(xmin), ''
     FROM pg_replication_slots WHERE xmin IS NOT NULL
     ORDER BY age(xmin) DESC LIMIT 1)
) AS holders
ORDER BY xmin_age DESC NULLS LAST, seconds DESC NULLS LAST
"""
"""What holds back the xmin horizon of this database: the oldest open transaction of
another session, prepared transaction, or replication slot. While one is open, VACUUM
cannot remove the dead rows every job leaves behind (DESIGN.md lesson 1)."""
