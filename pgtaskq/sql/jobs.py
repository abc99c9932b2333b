"""Statements on the job tables used by producers and operators (enqueue, inspect, cancel).

Each statement that makes a job runnable now sends one ``pg_notify`` in the same statement,
so it rides the caller's transaction: listeners hear it on commit and never on rollback.
The payload is ``q:<queue>[,<queue>...]`` so workers serving other queues stay asleep.

Statements that the worker runs (claim, complete, heartbeat, rescue) are in ``worker.py``.
"""

from __future__ import annotations

JOB_COLUMNS = """
    id, task, queue, status, args, kwargs, priority, attempts, max_attempts, run_at,
    created_at, started_at, NULL::timestamptz AS finished_at, last_error, NULL::jsonb AS result,
    dedupe_key, worker_id, cancel_requested
"""

HISTORY_COLUMNS = """
    id, task, queue, status, args, kwargs, priority, attempts, max_attempts, run_at,
    created_at, started_at, finished_at, last_error, result,
    dedupe_key, worker_id, false AS cancel_requested
"""

ENQUEUE_ONE = """
WITH new_job AS (
    INSERT INTO {schema}.jobs
        (queue, task, args, kwargs, priority, run_at, max_attempts, dedupe_key, schedule)
    VALUES (%(queue)s, %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(priority)s,
            coalesce(%(run_at)s::timestamptz, now())
                + make_interval(secs => %(delay)s::double precision),
            %(max_attempts)s, %(dedupe_key)s::text, %(schedule)s::text)
    ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
    RETURNING id, queue, run_at
), wake AS (
    SELECT pg_notify(%(channel)s, 'q:' || queue) FROM new_job WHERE run_at <= now()
)
SELECT id, true AS created FROM new_job, (SELECT count(*) FROM wake) AS notified
UNION ALL
SELECT id, false FROM {schema}.jobs
WHERE dedupe_key = %(dedupe_key)s::text AND NOT EXISTS (SELECT FROM new_job)
"""

ENQUEUE_MANY = """
WITH input AS (
    SELECT * FROM unnest(
        %(queues)s::text[], %(tasks)s::text[], %(args)s::jsonb[], %(kwargs)s::jsonb[],
        %(priorities)s::integer[], %(run_ats)s::timestamptz[], %(delays)s::double precision[],
        %(max_attempts)s::integer[], %(dedupe_keys)s::text[]
    ) WITH ORDINALITY
      AS i(queue, task, args, kwargs, priority, run_at, delay, max_attempts, dedupe_key, ord)
), new_jobs AS (
    INSERT INTO {schema}.jobs
        (queue, task, args, kwargs, priority, run_at, max_attempts, dedupe_key)
    SELECT queue, task, args, kwargs, priority,
           coalesce(run_at, now()) + make_interval(secs => delay), max_attempts, dedupe_key
    FROM input ORDER BY ord
    ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
    RETURNING id, queue, run_at, dedupe_key
), wake AS (
    SELECT pg_notify(%(channel)s, 'q:' || string_agg(DISTINCT queue, ','))
    FROM new_jobs WHERE run_at <= now() HAVING count(*) > 0
)
SELECT id, dedupe_key, true AS created FROM new_jobs, (SELECT count(*) FROM wake) AS notified
UNION ALL
SELECT id, dedupe_key, false FROM {schema}.jobs
WHERE dedupe_key = ANY(%(dedupe_keys)s::text[])
"""

FIND_BY_DEDUPE_KEYS = """
SELECT dedupe_key, id FROM {schema}.jobs WHERE dedupe_key = ANY(%(dedupe_keys)s::text[])
"""

GET = f"""
SELECT {JOB_COLUMNS} FROM {{schema}}.jobs WHERE id = %(id)s
UNION ALL
SELECT {HISTORY_COLUMNS} FROM {{schema}}.job_history WHERE id = %(id)s
"""

LIST_LIVE = f"""
SELECT {JOB_COLUMNS} FROM {{schema}}.jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
ORDER BY id DESC LIMIT %(limit)s
"""

LIST_HISTORY = f"""
SELECT {HISTORY_COLUMNS} FROM {{schema}}.job_history
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
ORDER BY id DESC LIMIT %(limit)s
"""

CANCEL = """
WITH queued AS (
    DELETE FROM {schema}.jobs WHERE id = %(id)s AND status = 'queued' RETURNING *
), archived AS (
    INSERT INTO {schema}.job_history
        (id, queue, task, args, kwargs, status, priority, run_at, attempts, max_attempts,
         dedupe_key, schedule, worker_id, created_at, started_at, finished_at, last_error)
    SELECT id, queue, task, args, kwargs, 'cancelled', priority, run_at, attempts, max_attempts,
           dedupe_key, schedule, worker_id, created_at, started_at, now(), last_error
    FROM queued
    RETURNING id
), running AS (
    UPDATE {schema}.jobs SET cancel_requested = true
    WHERE id = %(id)s AND status = 'running'
    RETURNING id, worker_id
), told AS (
    SELECT pg_notify(%(channel)s, 'c:' || id || ':' || worker_id) FROM running
)
SELECT 'cancelled' FROM archived
UNION ALL
SELECT 'requested' FROM running, (SELECT count(*) FROM told) AS notified
"""

RETRY = """
WITH finished AS (
    DELETE FROM {schema}.job_history
    WHERE id = %(id)s AND status IN ('failed', 'cancelled')
    RETURNING *
), requeued AS (
    INSERT INTO {schema}.jobs
        (id, queue, task, args, kwargs, priority, run_at, attempts, max_attempts, dedupe_key,
         schedule, created_at, last_error)
    OVERRIDING SYSTEM VALUE
    SELECT id, queue, task, args, kwargs, priority, now(), 0, max_attempts, dedupe_key,
           schedule, created_at, last_error
    FROM finished
    RETURNING id, queue
), wake AS (
    SELECT pg_notify(%(channel)s, 'q:' || queue) FROM requeued
)
SELECT id FROM requeued, (SELECT count(*) FROM wake) AS notified
"""
