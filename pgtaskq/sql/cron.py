"""Statements on the ``schedules`` table: register a worker's schedules, fire a tick, list.

``SCHEDULE_FIRE`` is what makes cron safe without a leader: the watermark UPDATE
(``last_tick < tick``) and the job INSERT are one statement, and the INSERT reads the
UPDATE's output. Two workers firing the same tick both try to update the same row; the
second waits for the first's row lock, re-checks ``last_tick < tick`` against the committed
row, finds it false, and inserts nothing. No advisory lock, no lock held between ticks, and
a worker killed mid-statement leaves either both writes or neither.

The job's id is drawn from the jobs identity sequence first, so the one UPDATE can also
record it as ``last_job_id`` (a statement cannot update the same row twice). A tick that
is not taken burns one sequence value, which only leaves a gap in job ids.
"""

from __future__ import annotations

SCHEDULE_REGISTER = """
WITH defined AS (
    SELECT * FROM unnest(
        %(names)s::text[], %(expressions)s::text[], %(tzs)s::text[], %(tasks)s::text[],
        %(queues)s::text[], %(misfires)s::text[], %(next_ticks)s::timestamptz[]
    ) AS d(name, expression, tz, task, queue, misfire, next_tick)
    ORDER BY name
), registered AS (
    INSERT INTO {schema}.schedules AS s
        (name, expression, tz, task, queue, misfire, active, next_tick, defined_at)
    SELECT name, expression, tz, task, queue, misfire, true, next_tick, %(now)s::timestamptz
    FROM defined
    ON CONFLICT (name) DO UPDATE SET
        expression = EXCLUDED.expression,
        tz = EXCLUDED.tz,
        task = EXCLUDED.task,
        queue = EXCLUDED.queue,
        misfire = EXCLUDED.misfire,
        active = true,
        next_tick = EXCLUDED.next_tick,
        -- Ticks of an old definition, or from before a schedule came back, are never
        -- "missed": the catch-up on start-up only looks at ticks after defined_at. It is
        -- the registering worker's clock, like the ticks it is compared with.
        defined_at = CASE
            WHEN s.active AND s.expression = EXCLUDED.expression AND s.tz = EXCLUDED.tz
            THEN s.defined_at ELSE EXCLUDED.defined_at END,
        updated_at = now()
    RETURNING name, last_tick, defined_at
), retired AS (
    UPDATE {schema}.schedules
    SET active = false, next_tick = NULL, updated_at = now()
    WHERE active AND name <> ALL(%(names)s::text[])
    RETURNING name
)
SELECT 'registered' AS kind, name, last_tick, defined_at FROM registered
UNION ALL
SELECT 'retired', name, NULL, NULL FROM retired
"""

SCHEDULE_FIRE = """
WITH job AS (
    SELECT nextval(pg_get_serial_sequence(%(jobs_table)s, 'id')) AS id
), claimed AS (
    UPDATE {schema}.schedules
    SET last_tick = %(tick)s, next_tick = %(next_tick)s, last_job_id = (SELECT id FROM job),
        updated_at = now()
    WHERE name = %(name)s AND (last_tick IS NULL OR last_tick < %(tick)s)
    RETURNING last_job_id
), new_job AS (
    INSERT INTO {schema}.jobs
        (id, queue, task, args, kwargs, priority, run_at, max_attempts, schedule)
    OVERRIDING SYSTEM VALUE
    SELECT last_job_id, %(queue)s, %(task)s, %(args)s::jsonb, %(kwargs)s::jsonb, %(priority)s,
           least(%(tick)s::timestamptz, now()), %(max_attempts)s, %(name)s
    FROM claimed
    RETURNING id, queue
), wake AS (
    SELECT pg_notify(%(channel)s, 'q:' || queue) FROM new_job
)
SELECT (SELECT id FROM new_job) AS job_id, (SELECT count(*) FROM wake) AS notified,
       s.name IS NOT NULL AS registered,
       coalesce(s.active AND (s.expression, s.tz, s.task)
                             = (%(expression)s::text, %(tz)s::text, %(task)s::text), false)
           AS registered_as_here
FROM (SELECT 1) AS one LEFT JOIN {schema}.schedules s ON s.name = %(name)s
"""
"""One row: the new job's id or NULL (another worker took this tick or a later one), the
number of NOTIFYs sent, whether the schedule's row exists, and whether it is active with
this worker's definition (else a worker started later has other code: this one goes on
firing its own definition, and says so in its log).

Only the watermark decides: a worker fires the schedules of its own code even when a
later-started worker retired or redefined them, so workers of two applications sharing a
schema, or old and new workers during a rolling deploy, never stop each other's cron."""

SCHEDULE_LIST = """
SELECT s.name, s.expression, s.tz, s.task, s.queue, s.misfire, s.active,
       s.last_tick, s.next_tick, s.last_job_id, coalesce(j.status, h.status)
FROM {schema}.schedules s
LEFT JOIN {schema}.jobs j ON j.id = s.last_job_id
LEFT JOIN {schema}.job_history h ON h.id = s.last_job_id
ORDER BY s.active DESC, s.name
"""
