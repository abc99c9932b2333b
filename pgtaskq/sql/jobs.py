"""Statements on the job tables used by producers and operators (enqueue, inspect, cancel).

Each statement that makes a job runnable now sends one ``pg_notify`` in the same statement,
so it rides the caller's transaction: listeners hear it on commit and never on rollback.
The payload is ``q:<queue>[,<queue>...]`` so workers serving other queues stay asleep.
Enqueues notify only when ``wake_wanted(queue)`` says a worker waits for it (schema
version 9, ``pgtaskq.worker.waiting``): PostgreSQL serialises the commits of notifying
transactions, so an enqueue nobody waits for must not notify. They call it only when the
wake gate is open (``fragments.wake_wanted``, schema version 11), so that while nobody
waits the question costs a sequence read, not a function call.

Statements that the worker runs (claim, complete, heartbeat, rescue) are in ``worker.py``.
"""

from __future__ import annotations

from pgtaskq.sql import fragments

JOB_COLUMNS = """
    id, task, queue, status, args::text AS args, kwargs::text AS kwargs, priority, attempts,
    max_attempts, run_at, created_at, started_at, NULL::timestamptz AS finished_at,
    last_error, NULL::text AS result, dedupe_key, worker_id, cancel_requested,
    coalesce(failed_attempts, '[]')::text AS failed_attempts
"""
"""A job's columns in ``pgtaskq.Job``'s order. JSON comes as text, decoded by
``Job.from_row`` field by field: psycopg's jsonb loader would raise for the whole result
on one value Python's json refuses (a 5,000-digit number), and no job could be shown."""

HISTORY_COLUMNS = """
    id, task, queue, status, args::text AS args, kwargs::text AS kwargs, priority, attempts,
    max_attempts, run_at, created_at, started_at, finished_at, last_error,
    result::text AS result, dedupe_key, worker_id, false AS cancel_requested,
    coalesce(failed_attempts, '[]')::text AS failed_attempts
"""

ENQUEUE_ONE = """
WITH new_job AS (
    INSERT INTO {schema}.jobs
        (queue, task, args, kwargs, priority, run_at, max_attempts, schedule)
    VALUES (%(queue)s, %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(priority)s,
            coalesce(%(run_at)s::timestamptz, now())
                + make_interval(secs => %(delay)s::double precision),
            %(max_attempts)s, %(schedule)s::text)
    RETURNING id, queue, run_at
)
SELECT id, CASE WHEN run_at <= now() THEN
    CASE WHEN """ + fragments.wake_wanted("queue") + """
    THEN pg_notify(%(channel)s, 'q:' || queue) END END
FROM new_job
"""
"""One job without a dedupe key: a plain INSERT, since there is nothing to conflict with.

Kept apart from ``ENQUEUE_ONE_DEDUPE`` because ``ON CONFLICT`` turns every insert into a
speculative insertion (an extra lock and WAL record per row) and the fallback lookup adds
planning work, both measurable on the hot path (benchmarks/RESULTS.md).
"""

ENQUEUE_ONE_DEDUPE = """
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
    SELECT CASE WHEN """ + fragments.wake_wanted("queue") + """
    THEN pg_notify(%(channel)s, 'q:' || queue) END
    FROM new_job WHERE run_at <= now()
)
SELECT id, true AS created FROM new_job, (SELECT count(*) FROM wake) AS notified
UNION ALL
SELECT id, false FROM {schema}.jobs
WHERE dedupe_key = %(dedupe_key)s::text AND NOT EXISTS (SELECT FROM new_job)
"""
"""One job with a dedupe key: returns the new id, or the id of the live job holding the key
(no row when that job committed after this statement's snapshot: the caller looks again)."""

_ENQUEUE_MANY_INPUT = """
WITH input AS (
    -- Per-job values arrive as one JSON array of args (parsed once, server-side, instead
    -- of one jsonb per array element) plus one array per option that some job overrides;
    -- an option nobody overrides is a NULL array (zero rows: ROWS FROM pads it with NULLs)
    -- and the scalar default applies. WITH ORDINALITY keeps input order: the scan is
    -- already sorted on ord, so ORDER BY ord below costs no sort and ids follow the input.
    SELECT * FROM ROWS FROM (
        jsonb_array_elements(%(args)s::jsonb),
        jsonb_array_elements(%(kwargs)s::jsonb),
        unnest(%(queues)s::text[]),
        unnest(%(priorities)s::integer[]),
        unnest(%(run_ats)s::timestamptz[]),
        unnest(%(delays)s::double precision[]),
        unnest(%(max_attempts)s::integer[]),
        unnest(%(dedupe_keys)s::text[])
    ) WITH ORDINALITY
      AS i(args, kwargs, queue, priority, run_at, delay, max_attempts, dedupe_key, ord)
), new_jobs AS (
    INSERT INTO {schema}.jobs
        (queue, task, args, kwargs, priority, run_at, max_attempts, dedupe_key)
    SELECT coalesce(queue, %(queue)s), %(task)s, args, coalesce(kwargs, '{{}}'),
           coalesce(priority, %(priority)s),
           coalesce(run_at, now()) + make_interval(secs => coalesce(delay, 0)),
           coalesce(max_attempts, %(max_attempts_default)s), dedupe_key
    FROM input ORDER BY ord
"""

_ENQUEUE_MANY_WAKE = """
), wake AS (
""" + fragments.notify_queues("new_jobs WHERE run_at <= now()", only_wanted=True) + """
)
"""

ENQUEUE_MANY = (
    _ENQUEUE_MANY_INPUT
    + """    RETURNING id, queue, run_at"""
    + _ENQUEUE_MANY_WAKE
    + """SELECT array_agg(id ORDER BY id) FROM new_jobs, (SELECT count(*) FROM wake) AS notified
"""
)
"""Many jobs, none with a dedupe key: one row back, the new ids in input order as an array.

No ``ON CONFLICT`` (speculative insertion costs about 20% per row) and one array instead of
a row per job, which the client would otherwise decode one by one.
"""

ENQUEUE_MANY_DEDUPE = (
    _ENQUEUE_MANY_INPUT
    + """    ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
    RETURNING id, queue, run_at, dedupe_key"""
    + _ENQUEUE_MANY_WAKE
    + """SELECT id, dedupe_key, true AS created
FROM new_jobs, (SELECT count(*) FROM wake) AS notified
UNION ALL
SELECT id, dedupe_key, false FROM {schema}.jobs
WHERE dedupe_key = ANY(%(keys)s::text[])
"""
)
"""Many jobs, some with dedupe keys: rows (id, key, created) for the new jobs and for the
live jobs already holding one of the batch's distinct keys (``keys``, never the per-job
array with its NULLs: that one made the planner pick a sequential scan of ``jobs``)."""

FIND_BY_DEDUPE_KEYS = """
SELECT dedupe_key, id FROM {schema}.jobs WHERE dedupe_key = ANY(%(dedupe_keys)s::text[])
"""

GET = f"""
SELECT {JOB_COLUMNS} FROM {{schema}}.jobs WHERE id = %(id)s
UNION ALL
SELECT {HISTORY_COLUMNS} FROM {{schema}}.job_history WHERE id = %(id)s
"""

LIST_LIVE = f"""
SELECT {JOB_COLUMNS} FROM {{schema}}.jobs{fragments.JOB_FILTER}
ORDER BY id DESC LIMIT %(limit)s
"""

LIST_HISTORY = f"""
SELECT {HISTORY_COLUMNS} FROM {{schema}}.job_history{fragments.JOB_FILTER}
ORDER BY id DESC LIMIT %(limit)s
"""

CANCEL = """
WITH target AS MATERIALIZED (
    -- lock first: a claim (or an acknowledgement) committed while we waited is seen here
    -- in the row's current state, which the statement's snapshot would still show as it
    -- was (queued, or running), so neither branch below would match and a live job would
    -- be reported as finished
    SELECT id, status FROM {schema}.jobs WHERE id = %(id)s FOR UPDATE
), queued AS (
    DELETE FROM {schema}.jobs j USING target t
    WHERE j.id = t.id AND t.status = 'queued'
    RETURNING j.*
), archived AS (""" + fragments.archive(
    "queued", status="'cancelled'", last_error="last_error") + """
    RETURNING id
), rolled_up AS (
    -- a queued job cancelled here never reaches a completer: count it under worker 0, as
    -- the rescuer and the hand-back do
""" + fragments.count_under_worker_zero(
    "SELECT queue, task, 'cancelled' AS outcome FROM queued") + """
), running AS (
    UPDATE {schema}.jobs j SET cancel_requested = true
    FROM target t
    WHERE j.id = t.id AND t.status = 'running'
    RETURNING j.id, j.worker_id
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
""" + fragments.requeue_from_history("finished") + """
), wake AS (
    SELECT pg_notify(%(channel)s, 'q:' || queue) FROM requeued
)
SELECT id FROM requeued, (SELECT count(*) FROM wake) AS notified
"""

COMMITTED_IDS = """
SELECT id FROM {schema}.jobs WHERE id = ANY(%(ids)s::bigint[])
UNION ALL
SELECT id FROM {schema}.job_history WHERE id = ANY(%(ids)s::bigint[])
"""
"""Which of these job ids another transaction can see: those committed (the Flask
extension asks at the end of a request whose transaction is still open)."""

DECLARED_OPTIONS = """
SELECT t.queue, t.priority, t.max_attempts
FROM {schema}.worker_tasks AS t JOIN {schema}.workers AS w ON w.id = t.worker_id
WHERE t.task = %(task)s
ORDER BY w.stopped_at IS NULL DESC, w.last_heartbeat_at DESC NULLS LAST, w.id DESC
LIMIT 1
"""
"""The options a task declares, as the most recently seen worker that runs it published
them (a live worker's before a stopped one's). Enqueue by name uses them for a task the
producer does not know (``pgtaskq.declared``)."""
