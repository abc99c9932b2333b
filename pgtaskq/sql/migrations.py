"""Schema DDL: versioned migrations, applied in order, each in the installer's transaction.

Layout (why it looks like this, see DESIGN.md):

- ``jobs`` is the hot table and holds only ``queued`` and ``running`` rows. Finished jobs
  move to ``job_history`` in the same statement as their acknowledgement, so the indexes
  the claim query walks stay as small as the live backlog, whatever the retention.
- ``jobs_ready`` / ``jobs_ready_by_queue`` are partial indexes on runnable rows in claim
  order; ``lease_expires_at`` is in no index so heartbeats are HOT updates (fillfactor 90
  leaves room on each page for them).
- ``jobs_dedupe_key`` is a unique index over live rows: at most one queued/running job per
  key, enforced by PostgreSQL rather than by a lock.
- Aggressive per-table autovacuum on ``jobs``: a queue table churns its whole content.
- ``schedules`` has one row per cron schedule; ``last_tick`` is the watermark that lets
  every worker fire ticks without a leader (see ``sql/cron.py``), and ``defined_at`` is
  when the current expression was registered, so a changed schedule never "catches up"
  ticks of its old definition.
- ``stats_minute`` holds per-minute rollups written by the completer in its ack statement,
  so ``pgtaskq stats`` never counts the job tables. One row per (minute, queue, task,
  worker): each worker's completer updates only its own row, so completers of different
  workers never wait on each other's row lock (a shared row would serialise their
  commits). ``histogram`` counts latency bucket numbers (``pgtaskq.histogram``) into a
  fixed array of 64 counts.

Never edit a released migration; append a new one. ``MIGRATIONS[i]`` brings the schema from
version ``i`` to ``i + 1``. Each version also needs its Django migration, a four-line file
``pgtaskq/contrib/django/migrations/NNNN_schema_vV.py`` (copy the last one; NNNN the next
free migration number, V the version; ``tests/test_django_migrations.py`` fails without
it): Django projects upgrade the schema with ``manage.py migrate``.
"""

from __future__ import annotations

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS {schema}.schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now(),
    pgtaskq_version text NOT NULL,
    created_schema boolean NOT NULL DEFAULT false
)
"""
"""The install record. ``created_schema`` is true on the row of the install that created
the schema itself: ``uninstall`` drops a schema only then (and only when it is empty)."""

V1 = """
CREATE TABLE {schema}.jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    task text NOT NULL,
    args jsonb NOT NULL DEFAULT '[]',
    kwargs jsonb NOT NULL DEFAULT '{{}}',
    status text NOT NULL DEFAULT 'queued',
    priority integer NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    dedupe_key text,
    schedule text,
    worker_id bigint,
    lease_expires_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    last_error text,
    CONSTRAINT jobs_status_live CHECK (status IN ('queued', 'running')),
    CONSTRAINT jobs_attempts_valid CHECK (attempts >= 0 AND max_attempts >= 1),
    CONSTRAINT jobs_running_has_owner CHECK (status <> 'running' OR worker_id IS NOT NULL)
) WITH (
    fillfactor = 90,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

CREATE INDEX jobs_ready ON {schema}.jobs (priority DESC, run_at, id)
    WHERE status = 'queued';
CREATE INDEX jobs_ready_by_queue ON {schema}.jobs (queue, priority DESC, run_at, id)
    WHERE status = 'queued';
CREATE INDEX jobs_running ON {schema}.jobs (worker_id)
    WHERE status = 'running';
CREATE UNIQUE INDEX jobs_dedupe_key ON {schema}.jobs (dedupe_key)
    WHERE dedupe_key IS NOT NULL;

CREATE TABLE {schema}.job_history (
    id bigint PRIMARY KEY,
    queue text NOT NULL,
    task text NOT NULL,
    args jsonb NOT NULL,
    kwargs jsonb NOT NULL,
    status text NOT NULL,
    priority integer NOT NULL,
    run_at timestamptz NOT NULL,
    attempts integer NOT NULL,
    max_attempts integer NOT NULL,
    dedupe_key text,
    schedule text,
    worker_id bigint,
    created_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    result jsonb,
    CONSTRAINT job_history_status_final CHECK (status IN ('succeeded', 'failed', 'cancelled'))
) WITH (
    autovacuum_vacuum_insert_scale_factor = 0.1,
    autovacuum_vacuum_scale_factor = 0.05
);

CREATE INDEX job_history_status_finished ON {schema}.job_history (status, finished_at);
CREATE INDEX job_history_task ON {schema}.job_history (task, id);

CREATE TABLE {schema}.workers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    queues text[],
    concurrency integer NOT NULL,
    busy_slots integer NOT NULL DEFAULT 0,
    stuck_slots integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at timestamptz,
    pgtaskq_version text NOT NULL,
    heartbeat_interval double precision NOT NULL DEFAULT 10
) WITH (fillfactor = 50);

CREATE TABLE {schema}.schedules (
    name text PRIMARY KEY,
    expression text NOT NULL,
    tz text NOT NULL,
    task text NOT NULL,
    queue text NOT NULL,
    misfire text NOT NULL DEFAULT 'run_once',
    active boolean NOT NULL DEFAULT true,
    last_tick timestamptz,
    next_tick timestamptz,
    last_job_id bigint,
    defined_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_misfire_valid CHECK (misfire IN ('run_once', 'skip'))
) WITH (fillfactor = 50);

CREATE TABLE {schema}.stats_minute (
    minute timestamptz NOT NULL,
    queue text NOT NULL,
    task text NOT NULL,
    worker_id bigint NOT NULL DEFAULT 0,
    succeeded integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    retried integer NOT NULL DEFAULT 0,
    cancelled integer NOT NULL DEFAULT 0,
    wait_ms_histogram integer[] NOT NULL DEFAULT '{{}}',
    run_ms_histogram integer[] NOT NULL DEFAULT '{{}}',
    PRIMARY KEY (minute, queue, task, worker_id)
) WITH (fillfactor = 70);

CREATE FUNCTION {schema}.histogram_step(state integer[], bucket integer)
RETURNS integer[] LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF state IS NULL THEN
        state := array_fill(0, ARRAY[64]);
    END IF;
    IF bucket IS NOT NULL THEN
        bucket := least(greatest(bucket, 0), 63) + 1;
        state[bucket] := state[bucket] + 1;
    END IF;
    RETURN state;
END
$$;

CREATE AGGREGATE {schema}.histogram(integer) (
    sfunc = {schema}.histogram_step, stype = integer[]
);

CREATE FUNCTION {schema}.backoff(attempt integer, base double precision, cap double precision)
RETURNS interval LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT make_interval(secs => least(cap, base * power(2, least(greatest(attempt - 1, 0), 62)))
                                 * (0.75 + random() * 0.5))
$$;
"""

_V2_CLAIM_QUERY = """        RETURN QUERY
        WITH candidates AS MATERIALIZED (
            SELECT j.id FROM {schema}.jobs AS j
            WHERE j.status = 'queued' AND j.run_at <= now() AND j.task = ANY(task_names)
              {queue_condition}
            ORDER BY j.priority DESC, j.run_at, j.id
            LIMIT max_jobs
            FOR UPDATE SKIP LOCKED
        ), claimed AS (
            UPDATE {schema}.jobs AS j
            SET status = 'running', worker_id = claimer, attempts = j.attempts + 1,
                started_at = now(), cancel_requested = false,
                lease_expires_at = now() + make_interval(secs => lease_seconds)
            FROM candidates AS c
            WHERE j.id = c.id
            RETURNING j.id, j.task, j.queue, j.args, j.kwargs, j.priority, j.attempts,
                      j.max_attempts, j.run_at
        )
        SELECT c.id, c.task, c.queue, c.args, nullif(c.kwargs, '{{}}'::jsonb), c.priority,
               c.attempts, c.max_attempts,
               greatest(0, extract(epoch FROM now() - c.run_at) * 1000)::double precision
        FROM claimed AS c
        ORDER BY c.priority DESC, c.run_at, c.id;
"""


def _v2_claim_query(queue_condition: str) -> str:
    """Version 2's claim query for one kind of queue condition (part of V2: never edit)."""
    return _V2_CLAIM_QUERY.replace("{queue_condition}", queue_condition)


V2 = """
CREATE FUNCTION {schema}.claim_jobs(
    claimer bigint, task_names text[], queue_names text[], max_jobs integer,
    lease_seconds double precision, claimers integer)
RETURNS TABLE (id bigint, task text, queue text, args jsonb, kwargs jsonb, priority integer,
               attempts integer, max_attempts integer, wait_ms double precision)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    queue_set text;
    turn_taken boolean := false;
BEGIN
    -- At most `claimers` claims of one set of queues at a time (0: no limit), each
    -- holding one of that many turns until the caller's transaction ends (the worker
    -- calls this as a statement of its own). Sixteen claimers at the head of the same
    -- index spent their time on its buffer locks and in the lock manager, testing each
    -- other's locked rows; taking turns was faster.
    IF claimers > 0 THEN
        queue_set := coalesce((SELECT string_agg(DISTINCT q, ',' ORDER BY q)
                               FROM unnest(queue_names) AS q), '*');
        FOR turn IN 0 .. claimers - 1 LOOP
            turn_taken := pg_try_advisory_xact_lock(hashtext('pgtaskq.claim {schema}'),
                                                    hashtext(queue_set || ':' || turn));
            EXIT WHEN turn_taken;
        END LOOP;
        IF NOT turn_taken THEN  -- every turn is taken: wait for one
            PERFORM pg_advisory_xact_lock(
                hashtext('pgtaskq.claim {schema}'),
                hashtext(queue_set || ':' || (pg_backend_pid() % claimers)));
        END IF;
    END IF;
    -- A lost lease only makes its job run again: the commit need not wait for the disk.
    -- JIT off: with sorts disabled, the plan's cost crosses jit_above_cost.
    PERFORM set_config('synchronous_commit', 'off', true), set_config('jit', 'off', true);
    IF queue_names IS NULL OR cardinality(queue_names) = 1 THEN
        -- One index gives the claim order: walk it whatever the (often stale) statistics
        -- say, never a bitmap scan of every runnable row plus a sort.
        PERFORM set_config('enable_sort', 'off', true),
                set_config('enable_bitmapscan', 'off', true);
    END IF;
    IF queue_names IS NULL THEN
""" + _v2_claim_query("") + """    ELSIF cardinality(queue_names) = 1 THEN
        -- queue = value: jobs_ready_by_queue gives the order (= ANY would walk jobs_ready)
""" + _v2_claim_query("AND j.queue = queue_names[1]") + """    ELSE
""" + _v2_claim_query("AND j.queue = ANY(queue_names)") + """    END IF;
END
$$;

COMMENT ON FUNCTION {schema}.claim_jobs(bigint, text[], text[], integer, double precision,
                                        integer) IS
'Lease up to max_jobs runnable jobs of task_names (and of queue_names, NULL for every '
'queue) for worker claimer, in claim order, at most claimers claims of a queue set at a '
'time. Call it as a statement of its own: it sets synchronous_commit, jit and planner '
'settings for the rest of the transaction and holds its claim turn until the transaction '
'ends.';
"""
"""The claim as one function call, so that a claim is one statement in its own transaction.

Version 1's claim was a pipeline (BEGIN, SET LOCALs, the claim, COMMIT), because planner
settings must be in force before the claim is planned. With 16 worker processes on 2
cores, claims contended for the head of the ready index (LWLock:BufferContent and
LWLock:LockManager waits) and 16 processes drained slower than 8; letting the claimers of
one queue set take turns fixed that (benchmarks/RESULTS.md has the A/B). Two turns by
default (``Worker(claimers=...)``): one turn drained as fast, but capped the claims of many
small batches harder (pgbench, 8 clients claiming 10 jobs each: 17,900 jobs/s without
turns, 14,300 with one, 15,200 with two). A turn must be held until the claim commits,
and psycopg sends a pipeline's statements one at a time with Python running between them:
a worker descheduled, or waiting for the GIL, between its claim and its COMMIT would have
stalled the other workers' claims. Here the turn, the settings and the claim are one
statement, which commits on its own.

What the settings are for:

- ``synchronous_commit = off``: the claim's commit does not wait for the disk. A lease lost
  in a database crash makes its job run again (at-least-once, as for a worker that dies);
  every acknowledgement is a durable commit whose WAL flush carries the earlier claims, so
  no job is ever recorded done without its lease. Waiting for the flush left the slots dry
  during each claim: a one-process drain went from 7,015 to 8,036 jobs/s without it.
- ``enable_sort``/``enable_bitmapscan = off`` when one index gives the claim order
  (``jobs_ready``, or ``jobs_ready_by_queue`` for one queue): the planner picks the plan
  from the table's statistics, which are stale right after a burst of enqueues into a quiet
  table; it then preferred a bitmap scan of every runnable row plus a sort to walking the
  index, and with 1,000,000 jobs just enqueued each claim took ~1 s. A worker serving
  several queues keeps the planner's choice.
- ``jit = off``: with sorts disabled, the final ORDER BY's estimated cost crosses
  ``jit_above_cost``, and every claim spent ~280 ms compiling.

The three queries differ only in their queue condition; PL/pgSQL plans each once per
connection.
"""

V3 = """
CREATE TABLE {schema}.paused_queues (
    queue text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION {schema}.claim_jobs(
    claimer bigint, task_names text[], queue_names text[], max_jobs integer,
    lease_seconds double precision, claimers integer)
RETURNS TABLE (id bigint, task text, queue text, args jsonb, kwargs jsonb, priority integer,
               attempts integer, max_attempts integer, wait_ms double precision)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    queue_set text;
    turn_taken boolean := false;
    paused text[];
BEGIN
    -- Claim turns, as in version 2 (keyed on the queue set the worker asked for).
    IF claimers > 0 THEN
        queue_set := coalesce((SELECT string_agg(DISTINCT q, ',' ORDER BY q)
                               FROM unnest(queue_names) AS q), '*');
        FOR turn IN 0 .. claimers - 1 LOOP
            turn_taken := pg_try_advisory_xact_lock(hashtext('pgtaskq.claim {schema}'),
                                                    hashtext(queue_set || ':' || turn));
            EXIT WHEN turn_taken;
        END LOOP;
        IF NOT turn_taken THEN  -- every turn is taken: wait for one
            PERFORM pg_advisory_xact_lock(
                hashtext('pgtaskq.claim {schema}'),
                hashtext(queue_set || ':' || (pg_backend_pid() % claimers)));
        END IF;
    END IF;
    -- Paused queues: read at every claim, so a pause holds for every worker from its
    -- next claim on. The queues to claim from become an explicit list without them
    -- (never a filter on the index walk: a paused queue's backlog at the head of
    -- jobs_ready would be read and skipped by every claim).
    SELECT array_agg(p.queue) INTO paused FROM {schema}.paused_queues AS p;
    IF paused IS NOT NULL THEN
        IF queue_names IS NULL THEN
            -- every queue with queued jobs: a loose index scan of jobs_ready_by_queue
            queue_names := ARRAY(
                WITH RECURSIVE queues AS (
                    (SELECT j.queue FROM {schema}.jobs AS j WHERE j.status = 'queued'
                     ORDER BY j.queue LIMIT 1)
                    UNION ALL
                    SELECT (SELECT j.queue FROM {schema}.jobs AS j
                            WHERE j.status = 'queued' AND j.queue > q.queue
                            ORDER BY j.queue LIMIT 1)
                    FROM queues AS q WHERE q.queue IS NOT NULL
                )
                SELECT q.queue FROM queues AS q
                WHERE q.queue IS NOT NULL AND q.queue <> ALL(paused));
        ELSE
            queue_names := ARRAY(SELECT q FROM unnest(queue_names) AS q
                                 WHERE q <> ALL(paused));
        END IF;
        IF cardinality(queue_names) = 0 THEN
            RETURN;
        END IF;
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true), set_config('jit', 'off', true);
    IF queue_names IS NULL OR cardinality(queue_names) = 1 THEN
        PERFORM set_config('enable_sort', 'off', true),
                set_config('enable_bitmapscan', 'off', true);
    END IF;
    IF queue_names IS NULL THEN
""" + _v2_claim_query("") + """    ELSIF cardinality(queue_names) = 1 THEN
""" + _v2_claim_query("AND j.queue = queue_names[1]") + """    ELSE
""" + _v2_claim_query("AND j.queue = ANY(queue_names)") + """    END IF;
END
$$;
"""
"""Pause and resume a queue (``TaskQueue.pause``, ``pgtaskq pause``).

A paused queue is a row of ``paused_queues``; ``claim_jobs`` reads that small table at
every claim and leaves those queues out, so a pause holds for every worker from its next
claim on, with no message to deliver (resuming sends the queue's wake-up so idle workers
claim at once). Jobs already leased run to their end. Everything version 2's claim does
(turns, settings, the three queue conditions) is unchanged; with a queue paused, a worker
of every queue claims from the explicit list of the other queues that have jobs (found by
a loose index scan), so the paused backlog is never walked.
"""

V4 = """
CREATE TABLE {schema}.job_trace_context (
    job_id bigint PRIMARY KEY,
    carrier jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""
"""Trace context of jobs enqueued inside a trace (``pgtaskq.contrib.opentelemetry``).

A table beside ``jobs`` rather than a column of it: only traced applications write it, so
the enqueue, claim and acknowledgement statements every queue runs stay as they are. The
pruner deletes the rows of jobs that have left ``jobs``.
"""

V5 = """
CREATE TABLE {schema}.worker_tasks (
    worker_id bigint NOT NULL REFERENCES {schema}.workers (id) ON DELETE CASCADE,
    task text NOT NULL,
    queue text NOT NULL,
    priority integer NOT NULL,
    max_attempts integer NOT NULL,
    timeout double precision,
    PRIMARY KEY (task, worker_id)
);
CREATE INDEX worker_tasks_worker ON {schema}.worker_tasks (worker_id);
"""
"""The registry of the tasks workers run, with what each task declares (queue, priority,
max_attempts, timeout). A worker publishes its tasks when it starts; rows go with the
worker's row (``ON DELETE CASCADE``). Enqueue by name reads a task's declared options
from here when the producer does not register the task (``pgtaskq.declared``), so the
job lands in the queue its workers serve. Workers of the previous release keep running:
they only do not publish."""

_V3_CLAIM_FUNCTION = V3[V3.index("CREATE OR REPLACE FUNCTION {schema}.claim_jobs("):]
assert _V3_CLAIM_FUNCTION.count("j.status = 'queued'") == 5

V6 = """
ALTER TABLE {schema}.jobs ADD COLUMN parked boolean NOT NULL DEFAULT false;

DROP INDEX {schema}.jobs_ready;
DROP INDEX {schema}.jobs_ready_by_queue;
CREATE INDEX jobs_ready ON {schema}.jobs (priority DESC, run_at, id)
    WHERE status = 'queued' AND NOT parked;
CREATE INDEX jobs_ready_by_queue ON {schema}.jobs (queue, priority DESC, run_at, id)
    WHERE status = 'queued' AND NOT parked;
CREATE INDEX jobs_parked ON {schema}.jobs (task, run_at) WHERE parked;

""" + _V3_CLAIM_FUNCTION.replace("j.status = 'queued'", "j.status = 'queued' AND NOT j.parked")
"""Parked jobs (issue 12): out of the ready indexes, so no claim walks them.

A claim walks ``jobs_ready`` in claim order and skips what it cannot take; with 200,000
jobs of a task no live worker registers (a typo, a task removed in a deploy, a web tier
newer than its workers) at a higher priority than the runnable ones, every claim walked
them all and one worker drained at 0.26x its rate; 1,000,000 jobs due tomorrow at a higher
priority cost ~60-200 ms per claim on PostgreSQL 15 (no skip scan before 18). Such jobs are
now *parked*: still ``queued`` for every reader (get_job, jobs, cancel, stats count them),
but out of ``jobs_ready`` and ``jobs_ready_by_queue``, whose predicate is now
``status = 'queued' AND NOT parked``. Every reader that walks those indexes says
``NOT parked`` too; ``claim_jobs`` is version 3's with that condition, nothing else.

Workers park and unpark (``sql/registry.py``, ``pgtaskq.parker``): a periodic sweep parks
the jobs at the head of the ready index that are not due yet or whose task no live worker
registers in ``worker_tasks`` (version 5); a worker unparks the due parked jobs of its own
tasks when it starts and whenever the earliest of them comes due (``jobs_parked`` gives
both, one probe per task). So a job of an unknown task runs as soon as a worker that
knows its task starts, and a parked future job runs at its run_at.
"""

FIXED_SEARCH_PATH = "SET search_path = pg_catalog, {schema}, pg_temp"
"""The ``search_path`` clause of every function pgtaskq installs: ``pg_catalog`` first, then
its own schema, ``pg_temp`` last (never before: a temporary object must not shadow ours).
A later ``CREATE OR REPLACE FUNCTION`` drops a function's settings, so every redefinition
must carry this clause again (``tests/test_search_path.py`` checks every function)."""

V7 = f"""
ALTER FUNCTION {{schema}}.histogram_step(integer[], integer) {FIXED_SEARCH_PATH};
ALTER FUNCTION {{schema}}.backoff(integer, double precision, double precision)
    {FIXED_SEARCH_PATH};
ALTER FUNCTION {{schema}}.claim_jobs(bigint, text[], text[], integer, double precision,
                                    integer) {FIXED_SEARCH_PATH};
"""
"""Every installed function runs with a fixed ``search_path``: a role that can create
objects in a schema on the caller's path (``public`` before PostgreSQL 15) could otherwise
plant ``public.unnest(text[])``, which beats ``pg_catalog.unnest(anyarray)`` and would run
as the worker inside every claim. The bodies' built-ins are also qualified (``render``),
but only this protects the functions of schemas installed before that."""

V8 = """
ALTER TABLE {schema}.jobs ADD COLUMN failed_attempts jsonb;
ALTER TABLE {schema}.job_history ADD COLUMN failed_attempts jsonb;
"""
"""Every failed attempt of a job, not only the last: a JSON array of
``{"attempt": n, "worker_id": w, "error": text, "at": timestamp}`` objects, oldest first
(``Job.failed_attempts``; django.tasks' ``TaskResult.errors`` and ``worker_ids``). NULL
until an attempt fails: only the statements that record a failed attempt (the completer's
retry and failure, the rescuer's lease expiry, the charged hand-back) append to it, so a
job that succeeds first time writes nothing more than before. The error is the text
already capped for ``last_error``. Adding a nullable column without a default rewrites
neither table."""

V9 = f"""
ALTER TABLE {{schema}}.workers
    ADD COLUMN announces_waiting boolean NOT NULL DEFAULT false,
    ADD COLUMN waiting_since timestamptz;

CREATE FUNCTION {{schema}}.wake_wanted(wanted_queue text) RETURNS boolean
LANGUAGE plpgsql VOLATILE {FIXED_SEARCH_PATH} AS $$
BEGIN
    RETURN current_setting('transaction_isolation') <> 'read committed'
        OR EXISTS (
            SELECT FROM {{schema}}.workers w
            WHERE w.stopped_at IS NULL
              AND (w.waiting_since IS NOT NULL OR NOT w.announces_waiting)
              AND (w.queues IS NULL OR wanted_queue = ANY (w.queues))
              AND w.last_heartbeat_at > now() - make_interval(
                  secs => greatest(3 * w.heartbeat_interval, 30)));
END
$$;
"""
"""Wake-ups only for a worker that waits for one (``pgtaskq.worker.waiting``).

Every enqueue used to send ``pg_notify``, and PostgreSQL serialises the commits of all
notifying transactions on one lock held across their WAL flush: concurrent enqueues queued
behind each other. Now an enqueue notifies only when ``wake_wanted(queue)`` is true: some
live worker serving that queue has announced that it waits (``waiting_since``, set before
its last empty claim), or is a worker of an earlier release (``announces_waiting`` false:
it never announces, so it is always taken as waiting and keeps getting every wake-up).

VOLATILE on purpose: each call reads ``workers`` with a snapshot taken after the enqueue's
INSERT (read committed), which the worker's side of the handshake relies on. Any other
isolation level reads the transaction's first snapshot: always notify there. PL/pgSQL, not
SQL: a SQL function's body is parsed and planned again by every statement that calls it
(~100 us a call on PostgreSQL 15, against ~20 us with PL/pgSQL's cached plan)."""

V10 = """
CREATE INDEX workers_live ON {schema}.workers (last_heartbeat_at) WHERE stopped_at IS NULL;
"""
"""An index of the workers that have not stopped, for ``wake_wanted()``, which every enqueue
of a due job calls. ``workers`` keeps a stopped worker's row for a day (``FORGET_OLD_WORKERS``):
with restarts, ``--max-jobs`` recycling or autoscaling that is thousands of rows. The
function's query over 5,000 stopped rows (EXPLAIN ANALYZE, PostgreSQL 15): a sequential scan
of 0.66 ms per enqueue before, an index scan of 0.008 ms with it."""

_WANTS_WAKE_UPS = """w.stopped_at IS NULL
              AND (w.waiting_since IS NOT NULL OR NOT w.announces_waiting)
              AND w.last_heartbeat_at > now() - make_interval(
                  secs => greatest(3 * w.heartbeat_interval, 30))"""
"""A live worker that wants wake-ups (``wake_wanted()``'s test, whatever the queue)."""

_GATE_LOCK = "pg_advisory_xact_lock(hashtext('pgtaskq.wake_gate'), hashtext('{schema}'))"
"""Serialises opening and closing the gate: a close that found nobody waiting must not
overwrite an opening committed after its look (see V11)."""

V11 = f"""
CREATE SEQUENCE {{schema}}.wake_gate AS smallint MINVALUE 0 MAXVALUE 1 START 1;
GRANT SELECT ON SEQUENCE {{schema}}.wake_gate TO PUBLIC;

CREATE FUNCTION {{schema}}.open_wake_gate() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER {FIXED_SEARCH_PATH} AS $$
BEGIN
    PERFORM {_GATE_LOCK};
    PERFORM setval('{{schema}}.wake_gate', 1);
    RETURN NULL;
END
$$;

CREATE FUNCTION {{schema}}.close_wake_gate() RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER {FIXED_SEARCH_PATH} AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RETURN false;  -- a snapshot older than the lock could miss an opening
    END IF;
    PERFORM {_GATE_LOCK};
    IF EXISTS (SELECT FROM {{schema}}.workers w WHERE {_WANTS_WAKE_UPS}) THEN
        RETURN false;
    END IF;
    PERFORM setval('{{schema}}.wake_gate', 0);
    RETURN true;
END
$$;

CREATE FUNCTION {{schema}}.close_wake_gate_after_update() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER {FIXED_SEARCH_PATH} AS $$
BEGIN
    PERFORM {{schema}}.close_wake_gate();
    RETURN NULL;
END
$$;

CREATE TRIGGER wake_gate_open_on_insert AFTER INSERT ON {{schema}}.workers
FOR EACH ROW WHEN (NEW.waiting_since IS NOT NULL OR NOT NEW.announces_waiting)
EXECUTE FUNCTION {{schema}}.open_wake_gate();

CREATE TRIGGER wake_gate_open_on_update AFTER UPDATE ON {{schema}}.workers
FOR EACH ROW WHEN (
    NEW.stopped_at IS NULL AND (NEW.waiting_since IS NOT NULL OR NOT NEW.announces_waiting)
    AND (OLD.stopped_at IS NOT NULL
         OR (OLD.waiting_since IS NULL AND OLD.announces_waiting)
         OR NEW.last_heartbeat_at - OLD.last_heartbeat_at
            > make_interval(secs => greatest(3 * NEW.heartbeat_interval, 30) / 2)))
EXECUTE FUNCTION {{schema}}.open_wake_gate();

CREATE TRIGGER wake_gate_close_on_update AFTER UPDATE ON {{schema}}.workers
FOR EACH ROW WHEN (
    OLD.stopped_at IS NULL AND (OLD.waiting_since IS NOT NULL OR NOT OLD.announces_waiting)
    AND (NEW.stopped_at IS NOT NULL OR (NEW.waiting_since IS NULL AND NEW.announces_waiting)))
EXECUTE FUNCTION {{schema}}.close_wake_gate_after_update();

-- after the triggers: a worker announcing meanwhile waits for them, then opens the gate
SELECT setval('{{schema}}.wake_gate', CASE WHEN EXISTS (
    SELECT FROM {{schema}}.workers w WHERE {_WANTS_WAKE_UPS}) THEN 1 ELSE 0 END);
"""
"""The wake gate: a one-bit summary of ``wake_wanted()`` that enqueues read for ~1 us.

Calling ``wake_wanted()`` cost every enqueue of a due job ~18 us of server time (a
PL/pgSQL call with its own snapshot, executor start and ``SET search_path``; measured with
pg_stat_statements on PostgreSQL 15: the enqueue statement 47 us against 29 us for the same
statement without it), 10-13% of the enqueue rate of 8 web processes on 2 cores, paid
even while nobody waits: when every worker is busy or none runs, the case the design is
for. Now an enqueue first reads the sequence ``wake_gate`` with ``pg_sequence_last_value``
(not MVCC: the latest value, whatever the snapshot) and calls ``wake_wanted()`` only when
it is not 0. The gate is 1 whenever some live worker might want a wake-up:

- opened (set to 1) by a trigger whenever a ``workers`` row starts wanting wake-ups: a
  worker announces ``waiting_since``, a worker of an earlier release (which never
  announces) registers, or a wanting worker heartbeats again after a gap (it may have
  been taken for lost meanwhile). The trigger sets it before the announcing transaction
  commits, so the handshake of ``pgtaskq.worker.waiting`` holds as before: a producer that
  read 0 did so before the announcement committed, after its own INSERT, so the worker
  sees its transaction in progress, or its job, when it claims again;
- closed (set to 0) by ``close_wake_gate()`` only when, under the same advisory lock as the
  opening and with a snapshot taken after it, no live worker wants wake-ups: when a worker
  withdraws or stops (a trigger), and at every rescuer pass (a worker that crashed while
  waiting stops counting once its heartbeat is stale). A close that found nobody can
  therefore not overwrite an opening it did not see: the opening took the lock before it
  or after it.

Both functions are ``SECURITY DEFINER`` (the schema owner's ``setval``) and everybody may
read the gate (one bit: "a worker may be waiting"), so no role needs a new grant. A
sequence, not a row: a row would need the snapshot, and so the function call, that this
avoids. Producers of the previous release call ``wake_wanted()`` directly, as before.
Enqueues in REPEATABLE READ: ``wake_wanted()`` says yes to them (their snapshot may predate
an announcement), but the gate is read after their INSERT and without a snapshot, so while
it is closed they skip the call by the same handshake as READ COMMITTED."""

MIGRATIONS: list[str] = [V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11]
"""``MIGRATIONS[i]`` upgrades version ``i`` to ``i + 1``; the last index + 1 is current."""

LATEST_VERSION = len(MIGRATIONS)

IDLE_TIMEOUT = """
SELECT set_config('idle_in_transaction_session_timeout', %(milliseconds)s, true)
"""
"""Bounds a migration's idle time, for its transaction only (``true``: like SET LOCAL,
which takes no parameters); ``pgtaskq.migrate.MIGRATION_IDLE_TIMEOUT`` says why."""

LOCK_TIMEOUT = """
SELECT set_config('lock_timeout', %(milliseconds)s, true)
"""
"""Bounds each wait of a migration for a table lock, for its transaction only; set after
``INSTALL_LOCK`` is held (``pgtaskq.migrate.MIGRATION_LOCK_TIMEOUT`` says why)."""

INSTALL_LOCK = """
SELECT pg_advisory_xact_lock(hashtext('pgtaskq.install'), hashtext(%(schema)s))
"""

SCHEMA_EXISTS = """
SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %(schema)s)
"""

CREATE_SCHEMA = "CREATE SCHEMA {schema}"

INSTALLED_VERSION = """
SELECT coalesce(max(version), 0) FROM {schema}.schema_version
"""

TABLE_EXISTS = """
SELECT to_regclass(%(qualified)s) IS NOT NULL
"""

RECORD_VERSION = """
INSERT INTO {schema}.schema_version (version, pgtaskq_version, created_schema)
VALUES (%(version)s, %(pgtaskq_version)s, %(created_schema)s)
"""

UNINSTALL_V1 = """
DROP TABLE IF EXISTS {schema}.jobs, {schema}.job_history, {schema}.workers,
    {schema}.schedules, {schema}.stats_minute;
DROP FUNCTION IF EXISTS {schema}.backoff(integer, double precision, double precision);
DROP AGGREGATE IF EXISTS {schema}.histogram(integer);
DROP FUNCTION IF EXISTS {schema}.histogram_step(integer[], integer);
"""

UNINSTALL_V2 = """
DROP FUNCTION IF EXISTS {schema}.claim_jobs(bigint, text[], text[], integer, double precision,
                                           integer);
"""

UNINSTALL_V3 = """
DROP TABLE IF EXISTS {schema}.paused_queues;
"""
"""Version 3's claim_jobs replaced version 2's: UNINSTALL_V2 drops it."""

UNINSTALL_V4 = """
DROP TABLE IF EXISTS {schema}.job_trace_context;
"""

UNINSTALL_V5 = """
DROP TABLE IF EXISTS {schema}.worker_tasks;
"""

UNINSTALL_V6 = """
DROP INDEX IF EXISTS {schema}.jobs_parked;
"""
"""Version 6's column and other indexes go with ``jobs``; its claim_jobs with UNINSTALL_V2."""

UNINSTALL_V7 = ""  # version 7 only changed settings of earlier versions' functions

UNINSTALL_V8 = """
ALTER TABLE IF EXISTS {schema}.jobs DROP COLUMN IF EXISTS failed_attempts;
ALTER TABLE IF EXISTS {schema}.job_history DROP COLUMN IF EXISTS failed_attempts;
"""
"""Run before UNINSTALL_V1 drops the tables themselves; kept so each version undoes its own."""

UNINSTALL_V9 = """
DROP FUNCTION IF EXISTS {schema}.wake_wanted(text);
ALTER TABLE IF EXISTS {schema}.workers DROP COLUMN IF EXISTS announces_waiting,
    DROP COLUMN IF EXISTS waiting_since;
"""

UNINSTALL_V10 = """
DROP INDEX IF EXISTS {schema}.workers_live;
"""

UNINSTALL_V11 = """
DROP FUNCTION IF EXISTS {schema}.open_wake_gate(),
    {schema}.close_wake_gate_after_update() CASCADE;
DROP FUNCTION IF EXISTS {schema}.close_wake_gate();
DROP SEQUENCE IF EXISTS {schema}.wake_gate;
"""
"""``CASCADE`` drops the triggers on ``workers`` with their functions."""

UNINSTALLS: list[str] = [UNINSTALL_V1, UNINSTALL_V2, UNINSTALL_V3, UNINSTALL_V4,
                         UNINSTALL_V5, UNINSTALL_V6, UNINSTALL_V7, UNINSTALL_V8, UNINSTALL_V9,
                         UNINSTALL_V10, UNINSTALL_V11]
"""``UNINSTALLS[i]`` drops what ``MIGRATIONS[i]`` created. Uninstall runs those of the
versions the install record holds, newest first, and nothing else: a schema where pgtaskq
was never installed keeps its tables, even ones named ``jobs``."""

assert len(UNINSTALLS) == len(MIGRATIONS), "every migration needs its UNINSTALLS entry"

DROP_VERSION_TABLE = "DROP TABLE {schema}.schema_version"

SCHEMA_CREATED_BY_PGTASKQ = """
SELECT EXISTS (
    SELECT FROM information_schema.columns
    WHERE table_schema = %(schema)s AND table_name = 'schema_version'
      AND column_name = 'created_schema')
"""
"""Installs made before the record had ``created_schema`` did not say: keep their schema."""

ADD_CREATED_SCHEMA_COLUMN = """
ALTER TABLE {schema}.schema_version
    ADD COLUMN created_schema boolean NOT NULL DEFAULT false
"""
"""Brings an older install record up to the shape ``RECORD_VERSION`` writes; run only when
there are versions to record, so an up-to-date schema needs no ownership of the table."""

CREATED_SCHEMA = """
SELECT coalesce(bool_or(created_schema), false) FROM {schema}.schema_version
"""

SCHEMA_IS_EMPTY = """
SELECT NOT EXISTS (
    SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %(schema)s
    UNION ALL
    SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = %(schema)s
)
"""

DROP_SCHEMA = "DROP SCHEMA IF EXISTS {schema}"
