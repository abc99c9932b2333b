"""Statements behind the Django admin's list filters: the task and queue names to offer.

Django's default filter reads ``SELECT DISTINCT task FROM jobs`` over the whole table on
every changelist page (a sequential scan of a million queued jobs or tens of millions of
history rows). These read only indexes and small tables, so their cost grows with the
number of distinct names, not of jobs:

- a *skip scan* (PostgreSQL has none before 18): a recursive query that asks an index for
  the smallest value above the previous one, one probe per distinct value. ``job_history``
  is walked on ``job_history_task (task, id)``, queued jobs' queues on
  ``jobs_ready_by_queue``, parked jobs' tasks on ``jobs_parked``;
- running jobs, through the partial index ``jobs_running`` (at most the slots of the
  workers);
- the registries: ``worker_tasks`` (tasks and their queues), live ``workers.queues``,
  ``paused_queues``, ``schedules``.

Complete for what a filter is for: every task of ``job_history``; for ``jobs``, every task a
worker registers or runs, and every task nobody registers (the parker parks those jobs).
Each query stops after ``%(limit)s`` names.
"""

from __future__ import annotations

_PARKED_TASKS = """
parked_tasks AS (
    (SELECT task FROM {schema}.jobs WHERE parked ORDER BY task LIMIT 1)
    UNION ALL
    SELECT (SELECT j.task FROM {schema}.jobs AS j
            WHERE j.parked AND j.task > p.task ORDER BY j.task LIMIT 1)
    FROM parked_tasks AS p WHERE p.task IS NOT NULL
)"""

_READY_QUEUES = """
ready_queues AS (
    (SELECT queue FROM {schema}.jobs WHERE status = 'queued' AND NOT parked
     ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM {schema}.jobs AS j
            WHERE j.status = 'queued' AND NOT j.parked AND j.queue > r.queue
            ORDER BY j.queue LIMIT 1)
    FROM ready_queues AS r WHERE r.queue IS NOT NULL
)"""

_HISTORY_TASKS = """
history_tasks AS (
    (SELECT task FROM {schema}.job_history ORDER BY task LIMIT 1)
    UNION ALL
    SELECT (SELECT h.task FROM {schema}.job_history AS h
            WHERE h.task > t.task ORDER BY h.task LIMIT 1)
    FROM history_tasks AS t WHERE t.task IS NOT NULL
)"""

_REGISTERED_QUEUES = """
    SELECT unnest(w.queues) FROM {schema}.workers AS w WHERE w.stopped_at IS NULL
    UNION SELECT queue FROM {schema}.worker_tasks
    UNION SELECT queue FROM {schema}.paused_queues
    UNION SELECT queue FROM {schema}.schedules"""

ADMIN_JOB_TASKS = f"""
WITH RECURSIVE {_PARKED_TASKS}
SELECT task FROM (
    SELECT task FROM parked_tasks
    UNION SELECT task FROM {{schema}}.worker_tasks
    UNION SELECT task FROM {{schema}}.schedules
    UNION SELECT task FROM {{schema}}.jobs WHERE status = 'running'
) AS names
WHERE task IS NOT NULL ORDER BY task LIMIT %(limit)s
"""
"""Tasks of live jobs: registered by workers or schedules, running, or parked (a task no
live worker registers: the parker parks its jobs)."""

ADMIN_JOB_QUEUES = f"""
WITH RECURSIVE {_READY_QUEUES}, {_PARKED_TASKS}
SELECT queue FROM (
    SELECT queue FROM ready_queues
    UNION SELECT queue FROM {{schema}}.jobs WHERE status = 'running'
    UNION SELECT (SELECT j.queue FROM {{schema}}.jobs AS j
                  WHERE j.parked AND j.task = p.task ORDER BY j.run_at DESC LIMIT 1)
          FROM parked_tasks AS p WHERE p.task IS NOT NULL
    UNION {_REGISTERED_QUEUES.strip()}
) AS names
WHERE queue IS NOT NULL ORDER BY queue LIMIT %(limit)s
"""
"""Queues of live jobs: every queue with a ready job (one probe of ``jobs_ready_by_queue``
each), of a running job, the latest queue of each parked task, and the queues workers,
their tasks, pauses and schedules name."""

ADMIN_HISTORY_TASKS = f"""
WITH RECURSIVE {_HISTORY_TASKS}
SELECT task FROM history_tasks WHERE task IS NOT NULL LIMIT %(limit)s
"""
"""Every task of ``job_history``, in order: one probe of ``job_history_task`` per task."""

ADMIN_HISTORY_QUEUES = f"""
WITH RECURSIVE {_HISTORY_TASKS}
SELECT queue FROM (
    -- row comparisons, not task = t.task: only job_history_task gives this order, so the
    -- planner cannot walk the primary key hoping to meet the task soon (a rare task's
    -- jobs may all be old: that walk would read the table)
    SELECT (SELECT h.queue FROM {{schema}}.job_history AS h
            WHERE (h.task, h.id) <= (t.task, 9223372036854775807)
            ORDER BY h.task DESC, h.id DESC LIMIT 1)
    FROM history_tasks AS t WHERE t.task IS NOT NULL
    UNION SELECT (SELECT h.queue FROM {{schema}}.job_history AS h
                  WHERE (h.task, h.id) >= (t.task, -9223372036854775808)
                  ORDER BY h.task, h.id LIMIT 1)
          FROM history_tasks AS t WHERE t.task IS NOT NULL
    UNION {_REGISTERED_QUEUES.strip()}
) AS names (queue)
WHERE queue IS NOT NULL ORDER BY queue LIMIT %(limit)s
"""
"""Queues of finished jobs: ``job_history`` has no index that starts with ``queue``, so
the newest and the oldest job of each task say its queues (three probes per task), with
the queues workers, their tasks, pauses and schedules name. A queue that only some
middle jobs of a task used (``using(queue=...)``) is missed; filtering by it by URL
(``?queue=``) still works."""
