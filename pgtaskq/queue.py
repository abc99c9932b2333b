"""``TaskQueue``: the task registry and the producer side (enqueue, inspect, cancel, retry).

Web processes import this and nothing else: enqueueing needs one statement on either the
caller's connection (``conn=``, inside the caller's transaction, never committed here) or
a connection of the queue's own small pool (autocommit, so the job is durable when the call
returns). The pool is opened lazily, so defining ``tq = TaskQueue()`` at import time costs
nothing and needs no database.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pgtaskq import defaults, options
from pgtaskq.connections import prepare_setting
from pgtaskq.declared import DeclaredOptions
from pgtaskq.errors import ConfigurationError, PgtaskqError
from pgtaskq.hooks import JobHooks
from pgtaskq.management import QueueManagement
from pgtaskq.pool import LivenessCheck
from pgtaskq.prepared import PreparedStatement
from pgtaskq.registration import JobMiddleware, TaskRegistration
from pgtaskq.sql import channel_name, validate_schema_name
from pgtaskq.sql import jobs as job_sql
from pgtaskq.task import Task

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from pgtaskq.cron import Schedule

log = logging.getLogger("pgtaskq")

_DEDUPE_RACE_RETRIES = 5


class _DefaultConnection:
    """The ``conn=`` of an enqueue that names none (see ``connection_for_enqueue``)."""

    def __repr__(self) -> str:
        return "<the queue's default connection>"


DEFAULT_CONNECTION: Any = _DefaultConnection()
"""``conn=`` left out. For a plain TaskQueue that is its own pool, as ``conn=None`` is; an
integration makes it the request's (or Django's) connection, so that an explicit
``conn=None`` remains the way to commit one job at once on pgtaskq's own pool."""


class TaskQueue(TaskRegistration, QueueManagement):
    """Registry of tasks plus the API to enqueue and manage jobs in one pgtaskq schema.

    Its parts live in their own modules: declaring tasks (``pgtaskq.registration``),
    connections and how statements run (``pgtaskq.connections``), the schema and job
    management API (``pgtaskq.management``); enqueueing is here.
    """

    def __init__(
        self,
        dsn: str | None = None,
        schema: str | None = None,
        *,
        pool_min_size: int = defaults.POOL_MIN_SIZE,
        pool_max_size: int = defaults.POOL_MAX_SIZE,
        pool_timeout: float = defaults.POOL_TIMEOUT,
        default_queue: str = defaults.QUEUE,
        default_max_attempts: int = defaults.MAX_ATTEMPTS,
        prepare: bool | None = None,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._dsn = dsn
        self.schema = validate_schema_name(
            (os.environ.get("PGTASKQ_SCHEMA") or defaults.SCHEMA) if schema is None else schema
        )
        self.channel = channel_name(self.schema)
        self.default_queue = options.check_queue(default_queue)
        self.default_max_attempts = options.check_max_attempts(default_max_attempts)
        self.tasks: dict[str, Task] = {}
        self.job_middlewares: list[JobMiddleware] = []
        self.job_hooks = JobHooks()
        self.schedules: dict[str, Schedule] = {}
        self._pool_min_size = _check_count("pool_min_size", pool_min_size, 0)
        self._pool_max_size = _check_count("pool_max_size", pool_max_size, 1)
        if self._pool_min_size > self._pool_max_size:
            raise ConfigurationError(
                f"pool_min_size ({pool_min_size}) is larger than pool_max_size "
                f"({pool_max_size})"
            )
        self.pool_timeout = _check_seconds("pool_timeout", pool_timeout)
        """Longest an enqueue (or any call on the queue's own pool) waits for a connection
        before raising ``DatabaseUnavailableError``."""
        self.prepare = prepare_setting(prepare)
        """Whether pgtaskq may use named prepared statements (off behind PgBouncer < 1.21
        in transaction mode: ``prepare=False`` or ``$PGTASKQ_PREPARE=0``)."""
        self._connect_kwargs = dict(connect_kwargs or {})
        self._pool: ConnectionPool | None = None
        self._pool_pid = os.getpid()
        self._pool_lock = threading.Lock()
        self._inherited_pools: list[ConnectionPool] = []
        self._liveness = LivenessCheck()
        self._prepared: dict[str, PreparedStatement] = {}
        self._conninfo: str | None = None
        self.declared_options = DeclaredOptions()
        """Options of tasks this process does not register, as their workers publish them."""

    def __repr__(self) -> str:
        return f"<TaskQueue schema={self.schema} tasks={len(self.tasks)}>"

    def reconfigure(self, *, dsn: str | None = None, schema: str | None = None,
                    prepare: bool | None = None) -> None:
        """Point an unopened queue elsewhere (``pgtaskq --dsn ... worker app:tq``)."""
        if self._pool is not None:
            raise PgtaskqError("reconfigure() must be called before the queue is used")
        if prepare is not None:
            self.prepare = prepare_setting(prepare)
        if dsn is not None:
            self._dsn = dsn
            self._conninfo = None
        if schema is not None:
            self.schema = validate_schema_name(schema)
            self.channel = channel_name(self.schema)

    def connection_for_enqueue(self, conn: Any = DEFAULT_CONNECTION) -> Any:
        """The connection an enqueue with this ``conn=`` writes on; None means our own pool.

        Integrations override it to make the default (``DEFAULT_CONNECTION``) the current
        request's transaction (Django's ``connections[alias]``, a Flask request's
        connection), so every enqueue option passes through ``enqueue``/``enqueue_many``
        unchanged; an explicit ``conn=None`` always means pgtaskq's own pool.
        """
        return None if conn is DEFAULT_CONNECTION else conn

    # -- enqueue ------------------------------------------------------------------------

    def _task_defaults(self, task_name: str) -> tuple[str, int, int]:
        """(queue, priority, max_attempts) of a task: as registered here, else as the
        workers that run it declare it (``pgtaskq.declared``), else the queue's defaults.

        Both sources were validated when they were set, so they are not checked again.
        """
        options.check_task_name(task_name)
        task = self.tasks.get(task_name)
        if task is not None:
            return task.queue, task.priority, task.max_attempts
        declared = self.declared_options.get(self, task_name)
        if declared is not None:
            return declared
        return self.default_queue, defaults.PRIORITY, self.default_max_attempts

    def _job_params(
        self,
        task_name: str,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        queue: str | None,
        priority: int | None,
        run_at: datetime | None,
        delay: float | None,
        dedupe_key: str | None,
        max_attempts: int | None,
    ) -> dict[str, Any]:
        """Validated statement parameters of one job; defaults from the task if known."""
        task_queue, task_priority, task_max_attempts = self._task_defaults(task_name)
        args_json, kwargs_json = options.check_args(args, kwargs)
        if delay is None and run_at is None:
            delay_seconds = 0.0
        else:
            delay_seconds, run_at = options.check_schedule(delay, run_at)
        return {
            "task": task_name,
            "queue": task_queue if queue is None else options.check_queue(queue),
            "args": args_json,
            "kwargs": kwargs_json,
            "priority": (
                task_priority if priority is None else options.check_priority(priority)
            ),
            "run_at": run_at,
            "delay": delay_seconds,
            "max_attempts": (
                task_max_attempts
                if max_attempts is None
                else options.check_max_attempts(max_attempts)
            ),
            "dedupe_key": options.check_dedupe_key(dedupe_key),
        }

    def enqueue(
        self,
        task_name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | None = None,
        dedupe_key: str | None = None,
        max_attempts: int | None = None,
        conn: Any = DEFAULT_CONNECTION,
        schedule: str | None = None,
    ) -> int:
        """Enqueue one job of ``task_name``; return its id (an existing id on dedupe).

        With ``conn=`` the row and its NOTIFY are written in that connection's current
        transaction: nothing exists until the caller commits. A task name no worker knows
        is accepted: the job waits, queued, until a worker that has the task runs.
        """
        conn = self.connection_for_enqueue(conn)
        params = self._job_params(
            task_name, args, kwargs, queue, priority, run_at, delay, dedupe_key, max_attempts
        )
        params["channel"] = self.channel
        params["schedule"] = schedule
        if params["dedupe_key"] is None:
            if conn is None:
                return int(self._run_prepared(job_sql.ENQUEUE_ONE, params)[0][0])
            return int(self._run(job_sql.ENQUEUE_ONE, params, conn)[0][0])
        for _ in range(_DEDUPE_RACE_RETRIES):
            rows = self._run(job_sql.ENQUEUE_ONE_DEDUPE, params, conn)
            if rows:
                return int(rows[0][0])
            # The key's holder committed after our snapshot (invisible to the statement)
            # or finished meanwhile: look again with a fresh snapshot, or insert again.
            found = self._run(
                job_sql.FIND_BY_DEDUPE_KEYS, {"dedupe_keys": [params["dedupe_key"]]}, conn
            )
            if found:
                return int(found[0][1])
        raise PgtaskqError(f"could not enqueue with dedupe_key {params['dedupe_key']!r}")

    def enqueue_many(
        self, task_name: str, jobs: Sequence[Mapping[str, Any]], *,
        conn: Any = DEFAULT_CONNECTION,
    ) -> list[int]:
        """Enqueue many jobs of one task in one statement; ids come back in input order.

        Each item is a dict with any of: args, kwargs, queue, priority, delay, run_at,
        dedupe_key, max_attempts. Everything is validated and serialised before the
        statement is sent, so a bad item means no job at all.
        """
        if isinstance(jobs, (str, bytes, Mapping)) or not isinstance(jobs, Sequence):
            raise TypeError("enqueue_many() takes a list of dicts, one per job")
        queue, priority, max_attempts = self._task_defaults(task_name)
        columns = options.many_job_columns(jobs)
        if not jobs:
            return []
        conn = self.connection_for_enqueue(conn)
        params = {
            "channel": self.channel,
            "task": task_name,
            "queue": queue,
            "priority": priority,
            "max_attempts_default": max_attempts,
            **columns,
        }
        dedupe_keys = columns["dedupe_keys"]
        keys = sorted({key for key in dedupe_keys if key is not None}) if dedupe_keys else []
        if not keys:
            rows = self._run(job_sql.ENQUEUE_MANY, params, conn)
            ids = _id_array(rows[0][0])
            if len(ids) != len(jobs):  # pragma: no cover - guards the statement's shape
                raise PgtaskqError("enqueue_many: the statement did not insert every job")
            return ids
        params["keys"] = keys
        rows = self._run(job_sql.ENQUEUE_MANY_DEDUPE, params, conn)
        return self._ids_in_input_order(dedupe_keys, rows, conn)

    def _ids_in_input_order(
        self, dedupe_keys: list[str | None], rows: list[tuple], conn: Any
    ) -> list[int]:
        """Map the statement's rows back to input positions.

        New ids are assigned in input order (``INSERT ... SELECT ... ORDER BY ord``), so the
        created rows sorted by id line up with the input rows that were inserted: every row
        without a key, and the first row of each key that was not already taken.
        """
        created = sorted((int(r[0]), r[1]) for r in rows if r[2])
        by_key: dict[str, int] = {r[1]: int(r[0]) for r in rows if not r[2]}
        created_keys = {key for _, key in created if key is not None}
        ids: list[int] = []
        position = 0
        unresolved: list[int] = []
        for index, key in enumerate(dedupe_keys):
            if key is None or (key in created_keys and key not in by_key):
                job_id, created_key = created[position]
                position += 1
                if created_key != key:  # pragma: no cover - guards the ordering invariant
                    raise PgtaskqError("enqueue_many: ids did not come back in input order")
                if key is not None:
                    by_key[key] = job_id
                ids.append(job_id)
            elif key in by_key:
                ids.append(by_key[key])
            else:
                ids.append(-1)
                unresolved.append(index)
        if unresolved:
            keys = sorted({dedupe_keys[i] for i in unresolved})  # type: ignore[type-var]
            found = dict(self._run(job_sql.FIND_BY_DEDUPE_KEYS, {"dedupe_keys": keys}, conn))
            for index in unresolved:
                if dedupe_keys[index] not in found:
                    raise PgtaskqError(
                        f"enqueue_many: job with dedupe_key {dedupe_keys[index]!r} finished "
                        "while being enqueued; enqueue it again"
                    )
                ids[index] = int(found[dedupe_keys[index]])
        return ids

def _check_count(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigurationError(f"{name} must be an int >= {least}, got {value!r}")
    return value


def _check_seconds(name: str, value: object) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0 < value < float("inf")):
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _id_array(value: Any) -> list[int]:
    """The ids of ``array_agg(id)`` as ints, whatever the driver made of the array."""
    if isinstance(value, str):  # a driver that does not parse bigint[] returns '{1,2}'
        return [int(part) for part in value.strip("{}").split(",")]
    return value if type(value) is list else [int(job_id) for job_id in value]
