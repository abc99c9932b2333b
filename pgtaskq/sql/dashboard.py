"""Statements behind the web dashboard's job list and its bulk actions.

The job list pages by key (``id < before``), never by ``OFFSET``: each page is a backward
walk of a primary key from the cursor, so page 1,000 costs what page 1 costs. A filter
(status, queue, task, text) is applied during that walk, bounded to a window of ids below
the cursor (``floor``), so a filter that matches rarely reads at most the window, never the
whole table; the page then offers to look further back.
"""

from __future__ import annotations

from pgtaskq.sql import fragments
from pgtaskq.sql.jobs import HISTORY_COLUMNS, JOB_COLUMNS

_PAGE_FILTERS = """
WHERE id < %(before)s AND id >= %(floor)s
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(text)s::text IS NULL OR args::text ILIKE %(text)s::text
       OR kwargs::text ILIKE %(text)s::text OR last_error ILIKE %(text)s::text)
ORDER BY id DESC LIMIT %(limit)s
"""

JOBS_PAGE_LIVE = f"SELECT {JOB_COLUMNS} FROM {{schema}}.jobs" + _PAGE_FILTERS
"""Live jobs of one page, newest first (``text`` is an ILIKE pattern or NULL)."""

JOBS_PAGE_HISTORY = f"SELECT {HISTORY_COLUMNS} FROM {{schema}}.job_history" + _PAGE_FILTERS
"""Finished jobs of one page, newest first."""

RUN_NOW = """
WITH moved AS (
    -- parked = false: a deferred job the parker took out of the ready index goes back
    -- at once (if no live worker registers its task, the parker parks it again)
    UPDATE {schema}.jobs SET run_at = now(), parked = false
    WHERE id = %(id)s AND status = 'queued' AND run_at > now()
    RETURNING id, queue
)
SELECT id, pg_notify(%(channel)s, 'q:' || queue) FROM moved
"""
"""A queued job that waits for its ``run_at`` becomes runnable now (and wakes its queue)."""

RETRY_FAILED_OF_TASK = """
WITH picked AS (
    -- one job per dedupe key (the newest), and none whose key a live job holds: queueing
    -- them would break the key's uniqueness and fail the whole statement
    SELECT id FROM (
        SELECT h.id, h.dedupe_key,
               row_number() OVER (PARTITION BY h.dedupe_key ORDER BY h.id DESC) AS nth
        FROM {schema}.job_history AS h
        WHERE h.task = %(task)s AND h.status = 'failed'
    ) AS failed
    WHERE (dedupe_key IS NULL OR nth = 1)
      AND NOT EXISTS (SELECT FROM {schema}.jobs AS j WHERE j.dedupe_key = failed.dedupe_key)
    ORDER BY id
    LIMIT %(limit)s
), finished AS (
    DELETE FROM {schema}.job_history AS h USING picked AS p
    WHERE h.id = p.id AND h.status = 'failed'
    RETURNING h.*
), requeued AS (
""" + fragments.requeue_from_history("finished") + """
), wake AS (
""" + fragments.notify_queues("requeued") + """
)
SELECT count(*) FROM requeued, (SELECT count(*) FROM wake) AS notified
"""
"""Queue every failed job of a task again (at most ``limit``), as ``RETRY`` does one."""

MAX_ID = """
SELECT greatest((SELECT max(id) FROM {schema}.jobs), (SELECT max(id) FROM {schema}.job_history))
"""
"""The newest id, the first page's cursor (two backward probes of primary keys)."""
