"""Default settings, one constant each, in one place so the docs and the code agree.

Every value here can be overridden: per queue (``TaskQueue(...)``, the DSN), per task
(``@tq.task(...)``), per enqueue (``.using(...)``) or per worker (``Worker(...)`` and the
``pgtaskq worker`` options, both derived from ``pgtaskq.worker.config.WorkerConfig``),
except WORKER_LOST_AFTER_BEATS and WORKER_LOST_AFTER_MIN: every reader of the workers
table (``stats``, ``check``, the parker) must judge a worker lost alike, so they are fixed.
Times are in seconds.
"""

from __future__ import annotations

SCHEMA = "pgtaskq"
"""Schema holding pgtaskq's tables; ``$PGTASKQ_SCHEMA`` overrides it."""

QUEUE = "default"
"""Queue a task goes to when neither the task nor the enqueue names one."""

PRIORITY = 0
"""Higher runs first; equal priority runs in enqueue order."""

MAX_ATTEMPTS = 20
"""Attempts before a failing job ends ``failed`` (20 attempts span about a day of backoff)."""

EMBEDDED_PATH = ".pgtaskq"
"""Data directory of the embedded server for ``dsn="embedded"``."""

POOL_MIN_SIZE = 1
"""Connections the TaskQueue's own pool keeps open."""

POOL_MAX_SIZE = 10
"""Most connections the TaskQueue's own pool opens (per process: a web process's
connections to PostgreSQL are at most this many, whatever its thread count)."""

POOL_TIMEOUT = 5.0
"""Longest ``enqueue()`` (and every call on the TaskQueue's own pool) waits for a database
connection before raising ``DatabaseUnavailableError``."""

PRODUCER_APPLICATION_NAME = "pgtaskq producer"
"""``application_name`` of the TaskQueue's own pool (``pg_stat_activity``), unless the DSN
or ``connect_kwargs`` set one."""

CONCURRENCY = 8
"""Slot threads per worker process."""

POLL_INTERVAL = 2.0
"""Longest an idle worker sleeps between looks at the table when no NOTIFY arrives."""

LEASE = 60.0
"""How long a lease lasts without a heartbeat: a dead worker's jobs come back after this."""

CLAIMERS = 2
"""Workers of one set of queues that may lease jobs at the same moment (0: no limit); the
others wait for a turn. Many claimers at the head of the same index slow each other down
(``migrations.V2`` has the measurements)."""

HEARTBEAT_INTERVAL = 10.0
"""How often the heartbeat thread extends the leases of running jobs."""

RESCUE_INTERVAL = 15.0
"""How often a worker looks for jobs whose lease expired (their worker died)."""

GRACE = 30.0
"""Seconds running jobs get to finish after SIGTERM before they are handed back."""

POOL = "thread"
"""Where slots run jobs: ``thread`` (in the worker process) or ``process`` (a child
process per slot, see ``pgtaskq.worker.process_pool``)."""

KILL_GRACE = 2.0
"""Process pool: seconds a job past its timeout (or force-cancelled) gets to stop on its
own once its cancel event is set, before its process gets SIGTERM (then SIGKILL
``process_pool.TERM_TO_KILL`` later)."""

BACKOFF_BASE = 5.0
"""Delay before the first automatic retry; it doubles with each attempt."""

BACKOFF_CAP = 3600.0
"""Longest backoff between two attempts."""

COMPLETER_FLUSH_INTERVAL = 0.005
"""Longest a finished job's outcome waits before it is written (in a batch)."""

COMPLETER_BATCH_SIZE = 200
"""Most outcomes written by one statement."""

WORKER_LOST_AFTER_BEATS = 3
"""A worker whose registry row was not refreshed for this many of its own heartbeat
intervals (30 s with the default interval) is shown as lost and not counted alive by
``pgtaskq check``."""

WORKER_LOST_AFTER_MIN = 2.0
"""Shortest silence that makes a worker lost, whatever its heartbeat interval."""

KEEP_SUCCEEDED = 24 * 3600.0
"""How long succeeded jobs stay in the history before workers prune them."""

KEEP_FAILED = 7 * 24 * 3600.0
"""How long failed and cancelled jobs stay in the history before workers prune them."""

KEEP_STATS = 2 * 24 * 3600.0
"""How long per-minute rollups (``stats_minute``) are kept; ``stats`` reads the last hour."""

PRUNE_INTERVAL = 60.0
"""How often each worker deletes expired history and rollups (in small batches)."""

PRUNE_BATCH = 1000
"""Most rows one pruning statement deletes: short transactions, bounded locks."""
