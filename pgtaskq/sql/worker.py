"""Statements the worker runs: lease, acknowledge, heartbeat, rescue, hand back, registry.

Together with ``jobs.py`` these are the whole state machine of a job:

    queued --CLAIM--> running --COMPLETE--> succeeded | failed | cancelled (job_history)
                         |  \\--COMPLETE (failure, attempts left)--> queued (run_at + backoff)
                         |---RESCUE (lease expired)--> queued, or failed when out of attempts
                         \\---HAND_BACK (graceful shutdown)--> queued, attempt not charged

Every transition out of ``running`` is guarded by ``status = 'running' AND worker_id = me
AND attempts = <the attempt the worker holds>``: a late, duplicate or stale acknowledgement
(the lease expired and the job runs elsewhere, or again here) changes nothing. ``attempts``
is incremented by the claim, so it doubles as the lease's fencing token.
"""

from __future__ import annotations

from pgtaskq import histogram
from pgtaskq.sql import fragments, registry

_GROUP_SLICE = f"(g.n - 1) * {histogram.BUCKETS} + 1 : g.n * {histogram.BUCKETS}"
"""Group n's histogram in the completer's flat arrays: ``histogram.BUCKETS`` wide each."""

_FAILED_OR_CANCELLED = "CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END"

_ENDED = """SELECT queue, task, 'retried' AS outcome FROM {requeued}
          UNION ALL
          SELECT queue, task, """ + _FAILED_OR_CANCELLED + """ AS outcome FROM given_up"""
"""What a rescue or a charged hand-back did, for the rollups: requeued jobs were retried,
given-up ones failed or were cancelled."""

CLAIM = """
SELECT * FROM {schema}.claim_jobs(%(worker_id)s, %(tasks)s::text[], %(queues)s::text[],
                                  %(limit)s, %(lease)s::double precision, %(claimers)s)
"""
"""Lease up to ``limit`` runnable jobs (of ``tasks``; of ``queues``, NULL for all) for this
worker. The claim itself is the function ``claim_jobs`` (schema version 2, in
``migrations.V2``): it waits for one of the queue set's ``claimers`` turns, sets the
claim's planner and commit settings and leases the jobs, so it must run as its own
transaction (autocommit). Rows come back in claim order (the order the slots start them),
with columns id, task, queue, args, kwargs (NULL when empty), priority, attempts,
max_attempts and wait_ms (how long the job waited since its run_at, computed by the
database: decoding two timestamps and a JSON object per job in the worker's main thread
cost more than the statement's own execution)."""

NEXT_DEFERRED = """
WITH RECURSIVE priorities AS (
    (SELECT priority, 1 AS depth FROM {schema}.jobs WHERE status = 'queued' AND NOT parked
     ORDER BY priority DESC LIMIT 1)
    UNION ALL
    SELECT (SELECT j.priority FROM {schema}.jobs j
            WHERE j.status = 'queued' AND NOT j.parked AND j.priority < p.priority
            ORDER BY j.priority DESC LIMIT 1), p.depth + 1
    FROM priorities p WHERE p.priority IS NOT NULL AND p.depth < 256
)
SELECT extract(epoch FROM min((SELECT j.run_at FROM {schema}.jobs j
            WHERE j.status = 'queued' AND NOT j.parked AND j.priority = p.priority
              AND j.run_at > now()
            ORDER BY j.run_at LIMIT 1)) - clock_timestamp())::double precision
FROM priorities p WHERE p.priority IS NOT NULL
"""
"""Seconds until the earliest future run_at, on the database's clock (the worker adds them to
its own monotonic clock: two hosts' clocks are never compared). One index probe per distinct
priority on ``jobs_ready`` (a loose index scan), so it stays cheap with a million queued
jobs and needs no index of its own. Only the 256 highest distinct priorities are looked at:
with a million distinct priorities the walk took 6.6 s, at every poll, in the worker's main
thread. A deferred job below them is still claimed by the next poll (it only does not wake
the worker early)."""

NEXT_DUE = """
SELECT (SELECT * FROM (""" + NEXT_DEFERRED + """) AS deferred) AS deferred,
       (""" + registry.NEXT_UNPARK + """) AS unpark
"""
"""``NEXT_DEFERRED`` and ``registry.NEXT_UNPARK`` (for ``tasks``) in one round trip."""

COMPLETE = """
WITH outcome AS (
    SELECT * FROM unnest(
        %(ids)s::bigint[], %(attempts)s::integer[], %(kinds)s::text[], %(errors)s::text[],
        %(results)s::jsonb[], %(delays)s::double precision[], %(wait_buckets)s::integer[],
        %(run_buckets)s::integer[]
    ) AS o(id, attempt, kind, error, result, delay, wait_bucket, run_bucket)
), owned AS MATERIALIZED (
    -- a failure or Retry of a job whose cancel was requested ends it 'cancelled' rather
    -- than queueing it again (the request may have come after the slot's outcome); and
    -- 'cancelled' is recorded only when the row says a cancel was requested: otherwise
    -- the attempt failed (a worker's view of a cancel is never proof, see hints.py)
    SELECT j.id, j.queue, j.task,
           CASE WHEN o.kind IN ('failed', 'retry', 'discarded') AND j.cancel_requested
                THEN 'cancelled'
                WHEN o.kind = 'cancelled' AND NOT j.cancel_requested THEN 'failed'
                ELSE o.kind END AS kind,
           (o.kind IN ('failed', 'retry', 'discarded') AND j.cancel_requested)
           OR (o.kind = 'cancelled' AND NOT j.cancel_requested) AS overridden,
           o.error, o.result, o.delay, o.wait_bucket, o.run_bucket,
           (o.kind IN ('failed', 'retry', 'cancelled') AND j.attempts < j.max_attempts
            AND NOT j.cancel_requested) AS again
    FROM outcome o CROSS JOIN LATERAL (
        -- one primary-key probe per outcome, in the batch's order: the completer sorts
        -- it by id, so rows are locked in id order, as HEARTBEAT does (the two never
        -- deadlock). OFFSET 0 keeps the ownership test out of this subquery; pushed in,
        -- it let stale statistics pick jobs_running and compare every outcome with every
        -- running row of this worker (14 of a 16 ms COMPLETE, 180 x 108 rows).
        -- SKIP LOCKED: another worker's claim can hold the lock of a row it could not
        -- take (in READ COMMITTED, a row updated under a claim's snapshot is locked in its
        -- latest version before the claim sees that it no longer qualifies, and stays
        -- locked until that claim commits). Waiting for those claims stalled the
        -- completers of 16 workers on 2 cores; such a row comes back as 'busy' below and
        -- is acknowledged by the next statement.
        SELECT * FROM {schema}.jobs WHERE id = o.id OFFSET 0 FOR UPDATE SKIP LOCKED
    ) j
    WHERE j.status = 'running' AND j.worker_id = %(worker_id)s AND j.attempts = o.attempt
), requeued AS (
    UPDATE {schema}.jobs j
    SET status = 'queued', worker_id = NULL, lease_expires_at = NULL,
        cancel_requested = false, last_error = w.error,
        failed_attempts = """ + fragments.with_failed_attempt("j", "w.error") + """,
        -- Retry(delay=inf) or a huge delay is capped at about 31 years and nan means the
        -- backoff: "interval out of range" failed the whole batch, for ever (the
        -- completer retries it), leaving every job of it running
        run_at = now() + coalesce(
            make_interval(secs => CASE WHEN w.delay IS NULL OR w.delay = 'NaN' THEN NULL
                                       ELSE least(w.delay, 1e9) END),
            {schema}.backoff(j.attempts, %(backoff_base)s, %(backoff_cap)s))
    FROM owned w
    WHERE j.id = w.id AND w.again
    RETURNING j.id, j.run_at
), finished AS (
    DELETE FROM {schema}.jobs j USING owned w
    WHERE j.id = w.id AND NOT w.again
    RETURNING j.*, w.kind AS outcome_kind, w.error AS outcome_error,
              w.result AS outcome_result
), archived AS (""" + fragments.archive(
    "finished",
    status="""CASE outcome_kind WHEN 'succeeded' THEN 'succeeded'
                                WHEN 'cancelled' THEN 'cancelled' ELSE 'failed' END""",
    last_error="coalesce(outcome_error, last_error)",
    # a success carries the failures before it as they are (NULL for most jobs)
    failed_attempts="""CASE WHEN outcome_kind = 'succeeded' OR outcome_error IS NULL
                THEN failed_attempts
                ELSE """ + fragments.with_failed_attempt("finished", "outcome_error") + """
           END""",
    result="outcome_result") + """
    RETURNING id
), rolled_up AS (
    INSERT INTO {schema}.stats_minute AS s
        (minute, queue, task, worker_id, succeeded, failed, retried, cancelled,
         wait_ms_histogram, run_ms_histogram)
    -- the completer's pre-aggregated rows (pgtaskq/rollup.py), valid when every outcome
    -- of the batch was acknowledged: the normal case, and the cheap one
    SELECT date_trunc('minute', now()), g.queue, g.task, %(worker_id)s, g.succeeded,
           g.failed, g.retried, g.cancelled,
           (%(g_wait)s::integer[])[""" + _GROUP_SLICE + """],
           (%(g_run)s::integer[])[""" + _GROUP_SLICE + """]
    FROM unnest(%(g_queues)s::text[], %(g_tasks)s::text[], %(g_succeeded)s::integer[],
                %(g_failed)s::integer[], %(g_retried)s::integer[],
                %(g_cancelled)s::integer[])
         WITH ORDINALITY AS g(queue, task, succeeded, failed, retried, cancelled, n)
    WHERE (SELECT count(*) FROM owned WHERE NOT overridden) = %(batch_size)s
    UNION ALL
    -- some outcome was stale, or turned into a cancellation: count only the acknowledged
    -- rows, aggregated here
    SELECT date_trunc('minute', now()), queue, task, %(worker_id)s,
           count(*) FILTER (WHERE kind = 'succeeded'),
           count(*) FILTER (WHERE kind IN ('failed', 'retry', 'discarded') AND NOT again),
           count(*) FILTER (WHERE again),
           count(*) FILTER (WHERE kind = 'cancelled'),
           {schema}.histogram(wait_bucket), {schema}.histogram(run_bucket)
    FROM owned
    WHERE (SELECT count(*) FROM owned WHERE NOT overridden) <> %(batch_size)s
    GROUP BY queue, task
""" + fragments.MERGE_ROLLUP + """
)
SELECT 'requeued' AS kind, id,
       extract(epoch FROM run_at - clock_timestamp())::double precision AS seconds_until
FROM requeued
UNION ALL
SELECT 'archived', id, NULL FROM archived
UNION ALL
SELECT 'busy', o.id, NULL
FROM outcome o CROSS JOIN LATERAL (
    -- the row as this statement found it, without a lock: still this worker's lease?
    SELECT status, worker_id, attempts FROM {schema}.jobs WHERE id = o.id OFFSET 0
) j
WHERE (SELECT count(*) FROM owned) < %(batch_size)s  -- only when some outcome was not owned
  AND o.id NOT IN (SELECT id FROM owned)
  AND j.status = 'running' AND j.worker_id = %(worker_id)s AND j.attempts = o.attempt
"""
"""Write a batch of outcomes in one statement: retries go back to ``queued`` with the
backoff computed here, everything else moves to ``job_history``, and the batch is added
to this worker's per-minute rollup rows (counts and latency histograms, pre-aggregated by
the completer, see ``pgtaskq.worker.rollup``). Only ``owned`` rows count, so a stale or
duplicate acknowledgement changes neither the job nor the statistics. Returns one row per job
actually acknowledged, and one ``busy`` row per job still held by this worker whose row
was locked by another transaction: the completer writes those again."""

FAIL_UNSTORABLE = """
WITH given_up AS (
    DELETE FROM {schema}.jobs
    WHERE id = %(id)s AND attempts = %(attempt)s AND status = 'running'
      AND worker_id = %(worker_id)s
    RETURNING *
)
INSERT INTO {schema}.job_history
    (id, queue, task, args, kwargs, status, priority, run_at, attempts, max_attempts,
     dedupe_key, schedule, worker_id, created_at, started_at, finished_at, last_error,
     failed_attempts)
SELECT id, left(queue, 200), left(task, 200), args, kwargs, 'failed', priority, run_at,
       attempts, max_attempts, left(dedupe_key, 200), left(schedule, 200), worker_id,
       created_at, started_at, now(), %(error)s,
       """ + fragments.with_failed_attempt("given_up", "%(error)s::text") + """
FROM given_up
"""
"""The completer's last resort for one job whose outcome COMPLETE cannot write even as a
short failure: the row itself cannot be archived as it is (a task name too long for the
history's index, written before names were checked). It ends ``failed`` with its names
cut to what the indexes take, and outside the rollups (their keys hold the names)."""

HEARTBEAT = """
WITH held AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS h(id, attempt)
), locked AS MATERIALIZED (
    -- rows locked in id order, as COMPLETE does: a heartbeat and an acknowledgement of
    -- the same worker's jobs never deadlock (seen with thousands of held rows)
    -- and, as there, one primary-key probe per held job (the caller sorts them by id)
    SELECT j.id FROM held h CROSS JOIN LATERAL (
        SELECT * FROM {schema}.jobs WHERE id = h.id OFFSET 0 FOR UPDATE
    ) j
    WHERE j.attempts = h.attempt AND j.status = 'running' AND j.worker_id = %(worker_id)s
), extended AS (
    UPDATE {schema}.jobs j
    SET lease_expires_at = now() + make_interval(secs => %(lease)s::double precision)
    FROM locked l
    WHERE j.id = l.id
    RETURNING j.id, j.cancel_requested
), registry AS (
    UPDATE {schema}.workers
    SET last_heartbeat_at = now(), busy_slots = %(busy_slots)s, stuck_slots = %(stuck_slots)s
    WHERE id = %(worker_id)s
    RETURNING id
)
SELECT id, cancel_requested FROM extended, (SELECT count(*) FROM registry) AS beat
"""
"""Extend every lease this worker holds in one statement, refresh its registry row, and
report cancel requests. A held job missing from the result has lost its lease."""

CANCEL_REQUESTED = """
SELECT id FROM {schema}.jobs
WHERE id = ANY(%(ids)s::bigint[]) AND status = 'running' AND worker_id = %(worker_id)s
  AND cancel_requested
"""
"""Poll fallback for cancellation when a NOTIFY was missed."""

RESCUE = """
WITH expired AS MATERIALIZED (
    SELECT id FROM {schema}.jobs
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), requeued AS (
    UPDATE {schema}.jobs j
    SET status = 'queued', worker_id = NULL, lease_expires_at = NULL, run_at = now(),
        last_error = 'lease expired: worker ' || j.worker_id
                     || ' stopped heartbeating (attempt ' || j.attempts || ')',
        failed_attempts = """ + fragments.with_failed_attempt(
            "j", "'lease expired: worker ' || j.worker_id || ' stopped heartbeating'") + """
    FROM expired e
    WHERE j.id = e.id AND j.attempts < j.max_attempts AND NOT j.cancel_requested
    RETURNING j.id, j.queue, j.task
), given_up AS (
    DELETE FROM {schema}.jobs j USING expired e
    WHERE j.id = e.id AND (j.attempts >= j.max_attempts OR j.cancel_requested)
    RETURNING j.*
), archived AS (""" + fragments.archive(
    "given_up", status=_FAILED_OR_CANCELLED,
    last_error="""'lease expired: worker ' || worker_id || ' stopped heartbeating (attempt '
               || attempts || ' of ' || max_attempts || ')'""",
    failed_attempts=fragments.with_failed_attempt(
        "given_up", "'lease expired: worker ' || given_up.worker_id"
                    " || ' stopped heartbeating'")) + """
    RETURNING id
), rolled_up AS (""" + fragments.count_under_worker_zero(_ENDED.format(requeued="requeued")) + """
), wake AS (
""" + fragments.notify_queues("requeued") + """
)
SELECT 'requeued' AS kind, id FROM requeued, (SELECT count(*) FROM wake) AS notified
UNION ALL
SELECT 'archived', id FROM archived
"""
"""Bring back the jobs of dead workers. The attempt their dead worker used stays counted,
so a job that kills its worker every time ends ``failed`` instead of looping. The rescued
attempts go into the rollups (retried, or failed/cancelled) under worker 0: they are rare,
so sharing one row costs no contention worth a shard."""

HAND_BACK = """
WITH held AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS h(id, attempt)
), returned AS (
    UPDATE {schema}.jobs j
    SET status = 'queued', worker_id = NULL, lease_expires_at = NULL,
        attempts = greatest(j.attempts - 1, 0),
        run_at = now() + make_interval(secs => %(delay)s::double precision)
    FROM held h
    WHERE j.id = h.id AND j.attempts = h.attempt AND j.status = 'running'
      AND j.worker_id = %(worker_id)s AND NOT j.cancel_requested
    RETURNING j.id, j.queue, j.run_at
), given_up AS (
    DELETE FROM {schema}.jobs j USING held h
    WHERE j.id = h.id AND j.attempts = h.attempt AND j.status = 'running'
      AND j.worker_id = %(worker_id)s AND j.cancel_requested
    RETURNING j.*
), archived AS (""" + fragments.archive(
    "given_up", status="'cancelled'",
    last_error="""'cancelled: cancel requested, then its worker ' || worker_id
               || ' shut down before the job finished (attempt ' || attempts || ')'""",
    failed_attempts=fragments.with_failed_attempt(
        "given_up", "'cancelled: cancel requested, then its worker '"
                    " || given_up.worker_id || ' shut down before the job finished'")) + """
    RETURNING id
), rolled_up AS (""" + fragments.count_under_worker_zero(
    "SELECT queue, task, 'cancelled' AS outcome FROM given_up") + """
), wake AS (
""" + fragments.notify_queues("returned WHERE run_at <= now()") + """
)
SELECT id FROM returned, (SELECT count(*) FROM wake) AS notified
UNION ALL
SELECT id FROM archived
"""
"""Graceful shutdown: jobs this worker will not finish go back to the queue without
charging the attempt. ``delay`` keeps them from starting elsewhere while this process,
whose threads may still be inside them, exits. A job whose cancel was requested is not
queued again (the next claim would clear the request and run it): it ends ``cancelled``."""

HAND_BACK_CHARGED = """
WITH held AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS h(id, attempt)
), mine AS MATERIALIZED (
    SELECT j.id FROM {schema}.jobs j JOIN held h ON j.id = h.id AND j.attempts = h.attempt
    WHERE j.status = 'running' AND j.worker_id = %(worker_id)s
    ORDER BY j.id
    FOR UPDATE OF j
), returned AS (
    UPDATE {schema}.jobs j
    SET status = 'queued', worker_id = NULL, lease_expires_at = NULL,
        run_at = now() + make_interval(secs => %(delay)s::double precision),
        last_error = %(error)s || ' (attempt ' || j.attempts || ')',
        failed_attempts = """ + fragments.with_failed_attempt("j", "%(error)s::text") + """
    FROM mine m
    WHERE j.id = m.id AND j.attempts < j.max_attempts AND NOT j.cancel_requested
    RETURNING j.id, j.queue, j.task
), given_up AS (
    DELETE FROM {schema}.jobs j USING mine m
    WHERE j.id = m.id AND (j.attempts >= j.max_attempts OR j.cancel_requested)
    RETURNING j.*
), archived AS (""" + fragments.archive(
    "given_up", status=_FAILED_OR_CANCELLED,
    last_error="%(error)s || ' (attempt ' || attempts || ' of ' || max_attempts || ')'",
    failed_attempts=fragments.with_failed_attempt("given_up", "%(error)s::text")) + """
    RETURNING id
), rolled_up AS (""" + fragments.count_under_worker_zero(_ENDED.format(requeued="returned")) + """
)
SELECT id FROM returned
UNION ALL
SELECT id FROM archived
"""
"""Graceful shutdown, for jobs still running at the end of the grace period whose task
forked processes that are still alive: unlike ``HAND_BACK``, the attempt stays charged.
Such a job typically waits for a child that never ends; handed back free at every
shutdown, it never did. Out of attempts, it ends ``failed``."""

REGISTER_WORKER = """
INSERT INTO {schema}.workers (host, pid, queues, concurrency, pgtaskq_version,
                              heartbeat_interval, announces_waiting)
VALUES (%(host)s, %(pid)s, %(queues)s::text[], %(concurrency)s, %(version)s,
        %(heartbeat_interval)s, true)
RETURNING id
"""
"""``heartbeat_interval`` lets ``stats`` and ``check`` tell a lost worker from one that
simply beats slowly (``--heartbeat-interval 30``). ``announces_waiting``: producers notify
this worker only while it says it waits (``pgtaskq.worker.waiting``); a worker of an earlier
release leaves it false and gets every wake-up."""

ANNOUNCE_WAITING = """
UPDATE {schema}.workers
SET waiting_since = CASE WHEN %(waiting)s::boolean THEN now() END
WHERE id = %(worker_id)s
"""
"""The worker waits for work (producers of its queues notify it), or no longer does."""

IN_PROGRESS = """
SELECT array_agg(xid) FROM txid_snapshot_xip(txid_current_snapshot()) AS xid
"""
"""Transactions in progress now (right after an announcement: the producers it crossed)."""

STILL_IN_PROGRESS = """
SELECT array_agg(xid) FROM unnest(%(xids)s::bigint[]) AS xid
WHERE txid_status(xid) = 'in progress'
"""

PUBLISH_TASKS = """
INSERT INTO {schema}.worker_tasks (worker_id, task, queue, priority, max_attempts, timeout)
SELECT %(worker_id)s, * FROM unnest(%(tasks)s::text[], %(queues)s::text[],
                                     %(priorities)s::integer[], %(max_attempts)s::integer[],
                                     %(timeouts)s::double precision[])
ON CONFLICT (task, worker_id) DO NOTHING
"""
"""A starting worker's tasks, with what each declares (enqueue by name reads them)."""

WORKER_STOPPED = """
UPDATE {schema}.workers SET stopped_at = now(), busy_slots = 0, last_heartbeat_at = now()
WHERE id = %(worker_id)s
"""

CLOSE_WAKE_GATE = """
SELECT {schema}.close_wake_gate()
"""
"""Close the wake gate if no live worker wants wake-ups (schema version 11). Withdrawing and
stopping close it by a trigger; the rescuer's pass closes it after a worker that crashed
while waiting, whose row still says it waits, has gone stale."""

FORGET_OLD_WORKERS = """
DELETE FROM {schema}.workers
WHERE last_heartbeat_at < now() - make_interval(secs => %(older_than)s::double precision)
"""
