"""SQL pieces that several statements share, so each rule is written once.

They are plain text spliced into the statement templates of the sibling modules (still
rendered through :func:`pgtaskq.sql.render`, so ``{schema}`` and ``%(name)s`` work here too).
"""

from __future__ import annotations

NOTIFY_PAYLOAD_CHUNK = 7000
"""Bytes of queue names per NOTIFY: ``pg_notify`` raises at 8000, which used to fail a whole
enqueue, rescue or hand-back spanning a few hundred (per-tenant) queues."""


def wake_wanted(queue: str) -> str:
    """Whether an enqueue of a job of ``queue`` (an expression) must notify: the wake gate
    first, ``wake_wanted()`` only when it is open (schema version 11). ``to_regclass``, not
    a ``::regclass`` literal: against a schema of version 9 or 10 (no gate yet) the gate
    reads NULL and the call is made, as by producers of that release; CASE, not AND, so
    that the function is never called first."""
    return (f"(CASE WHEN pg_sequence_last_value(to_regclass('{{schema}}.wake_gate')) = 0 "
            f"THEN false ELSE {{schema}}.wake_wanted({queue}) END)")


def notify_queues(queues: str, only_wanted: bool = False) -> str:
    """A SELECT that sends ``q:<queue>,...`` wake-ups for the rows of ``queues`` (a
    subquery yielding a ``queue`` column), one NOTIFY per ~7000 bytes of distinct names;
    ``only_wanted``: only for the queues ``wake_wanted()`` names (enqueues)."""
    wanted = f" WHERE {wake_wanted('queue')}" if only_wanted else ""
    return f"""
    SELECT pg_notify(%(channel)s, 'q:' || string_agg(queue, ',' ORDER BY queue))
    FROM (SELECT queue,
                 sum(octet_length(queue) + 1) OVER (ORDER BY queue)
                     / {NOTIFY_PAYLOAD_CHUNK} AS chunk
          FROM (SELECT DISTINCT queue FROM {queues}) AS distinct_queues{wanted}) AS chunked
    GROUP BY chunk"""


MERGE_ROLLUP = """
    ON CONFLICT (minute, queue, task, worker_id) DO UPDATE
    SET succeeded = s.succeeded + excluded.succeeded,
        failed = s.failed + excluded.failed,
        retried = s.retried + excluded.retried,
        cancelled = s.cancelled + excluded.cancelled,
        -- element-wise sums, inline: measured cheaper than calling a SQL function
        wait_ms_histogram = ARRAY(
            SELECT coalesce(x, 0) + coalesce(y, 0)
            FROM unnest(s.wait_ms_histogram, excluded.wait_ms_histogram)
                 WITH ORDINALITY AS t(x, y, i) ORDER BY i),
        run_ms_histogram = ARRAY(
            SELECT coalesce(x, 0) + coalesce(y, 0)
            FROM unnest(s.run_ms_histogram, excluded.run_ms_histogram)
                 WITH ORDINALITY AS t(x, y, i) ORDER BY i)"""
"""Add a row into an existing ``stats_minute AS s`` row: counts and histograms summed."""


FAILED_ATTEMPTS_KEPT = 100
"""Failed attempts a job keeps in ``failed_attempts``, the latest ones. A job may allow any
number of attempts and each error may hold 32,000 characters: unbounded, the array would
grow without limit (every failure rewriting it whole) until the row could not be stored."""


def with_failed_attempt(row: str, error: str) -> str:
    """``failed_attempts`` of ``row`` (a jobs row alias) with its current attempt appended as
    failed with ``error``: the attempt number, the worker that ran it and when it ended;
    the latest ``FAILED_ATTEMPTS_KEPT`` only (jsonpath's lax mode clips the range).
    Read the row's values before the statement changes them (an UPDATE's SET sees them)."""
    return f"""jsonb_path_query_array(coalesce({row}.failed_attempts, '[]'::jsonb)
            || jsonb_build_array(jsonb_build_object(
                   'attempt', {row}.attempts, 'worker_id', {row}.worker_id,
                   'error', {error}, 'at', now())),
            '$[last - {FAILED_ATTEMPTS_KEPT - 1} to last]')"""


def requeue_from_history(rows: str) -> str:
    """An INSERT that puts the archived rows of ``rows`` (a CTE of ``job_history`` rows)
    back in ``jobs`` under their own ids, due now, with a fresh attempt count; it returns
    ``id, queue``. Manual retries of one job and of a task's failed jobs share it, so a
    requeued job looks the same whichever door it came back through."""
    return f"""
    INSERT INTO {{schema}}.jobs
        (id, queue, task, args, kwargs, priority, run_at, attempts, max_attempts, dedupe_key,
         schedule, created_at, last_error)
    OVERRIDING SYSTEM VALUE
    SELECT id, queue, task, args, kwargs, priority, now(), 0, max_attempts, dedupe_key,
           schedule, created_at, last_error
    FROM {rows}
    RETURNING id, queue"""


def archive(rows: str, *, status: str, last_error: str,
            failed_attempts: str = "failed_attempts", result: str | None = None) -> str:
    """An INSERT that moves the jobs rows of ``rows`` (a CTE of deleted ``jobs`` rows) to
    ``job_history`` as they are, finished now with ``status``, ``last_error`` and
    ``failed_attempts`` (SQL expressions over those rows) and, given, ``result``. Every
    door out of the jobs table (acknowledgement, cancel, rescue, hand-back) writes the
    history row the same way; it returns nothing (callers add ``RETURNING``)."""
    result_column, result_value = (", result", f", {result}") if result else ("", "")
    return f"""
    INSERT INTO {{schema}}.job_history
        (id, queue, task, args, kwargs, status, priority, run_at, attempts, max_attempts,
         dedupe_key, schedule, worker_id, created_at, started_at, finished_at, last_error,
         failed_attempts{result_column})
    SELECT id, queue, task, args, kwargs, {status}, priority, run_at, attempts, max_attempts,
           dedupe_key, schedule, worker_id, created_at, started_at, now(), {last_error},
           {failed_attempts}{result_value}
    FROM {rows}"""


def count_under_worker_zero(ended: str) -> str:
    """An upsert adding the jobs of ``ended`` (a query with columns queue, task and outcome:
    ``failed``, ``retried`` or ``cancelled``) to the current minute's rollup rows of worker
    0: what ends outside a completer (a cancel of a queued job, the rescuer, a hand-back)
    is rare, so sharing one row per (queue, task) costs no contention worth a shard. Rows
    are locked in (queue, task) order: several workers write them."""
    return f"""
    INSERT INTO {{schema}}.stats_minute AS s
        (minute, queue, task, worker_id, failed, retried, cancelled)
    SELECT date_trunc('minute', now()), queue, task, 0,
           count(*) FILTER (WHERE outcome = 'failed'),
           count(*) FILTER (WHERE outcome = 'retried'),
           count(*) FILTER (WHERE outcome = 'cancelled')
    FROM ({ended}) AS ended
    GROUP BY queue, task
    ORDER BY queue, task
    ON CONFLICT (minute, queue, task, worker_id) DO UPDATE
    SET failed = s.failed + excluded.failed,
        retried = s.retried + excluded.retried,
        cancelled = s.cancelled + excluded.cancelled"""


JOB_FILTER = """
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(task)s::text IS NULL OR task = %(task)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)"""
"""The job listings' filter: each of status, task and queue when given."""
