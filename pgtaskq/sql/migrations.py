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
version ``i`` to ``i + 1``.
"""

from __future__ import annotations

SCHEMA_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS {schema}.schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now(),
    pgtaskq_version text NOT NULL
)
"""

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

MIGRATIONS: list[str] = [V1]
"""``MIGRATIONS[i]`` upgrades version ``i`` to ``i + 1``; the last index + 1 is current."""

LATEST_VERSION = len(MIGRATIONS)

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
INSERT INTO {schema}.schema_version (version, pgtaskq_version)
VALUES (%(version)s, %(pgtaskq_version)s)
"""

UNINSTALL = """
DROP TABLE IF EXISTS {schema}.jobs, {schema}.job_history, {schema}.workers,
    {schema}.schedules, {schema}.stats_minute, {schema}.schema_version;
DROP FUNCTION IF EXISTS {schema}.backoff(integer, double precision, double precision);
DROP AGGREGATE IF EXISTS {schema}.histogram(integer);
DROP FUNCTION IF EXISTS {schema}.histogram_step(integer[], integer);
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
