"""What a task declares (queue, priority, max_attempts), for enqueue by name.

``pgtaskq enqueue reports.build`` or ``tq.enqueue("reports.build")`` from a process that
does not import the task used the queue's defaults: the job of a task declared with
``queue="reports", max_attempts=2`` landed in ``default`` with 20 attempts, and a worker
serving only ``reports`` never saw it. Workers publish each task's declared options in
``worker_tasks`` when they start; a producer that does not know the task reads them from
there (the most recently seen worker's declaration wins), once per task per
``CACHE_SECONDS``, on its own pool: never inside the caller's transaction, where an error
would abort it. No declaration (no worker has run the task yet, or a schema without the
registry): the queue's defaults, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

from pgtaskq.sql import jobs as job_sql

if TYPE_CHECKING:
    from pgtaskq.queue import TaskQueue

log = logging.getLogger("pgtaskq")

CACHE_SECONDS = 30.0
"""How long a task's declared options are reused before being read again: a deploy that
changes a task's queue reaches producers within this time."""
MISSING_CACHE_SECONDS = 5.0
"""How long "no worker declares this task" is believed: the first worker with the task
may be starting right now."""


class Declared(NamedTuple):
    queue: str
    priority: int
    max_attempts: int


class DeclaredOptions:
    """A small per-queue cache of the options live workers publish for their tasks."""

    def __init__(self, ttl: float = CACHE_SECONDS,
                 missing_ttl: float = MISSING_CACHE_SECONDS) -> None:
        self._ttl = ttl
        self._missing_ttl = missing_ttl
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Declared | None]] = {}

    def get(self, tq: TaskQueue, task_name: str) -> Declared | None:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(task_name)
        if hit is not None and now - hit[0] < (self._ttl if hit[1] else self._missing_ttl):
            return hit[1]
        declared = self._read(tq, task_name)
        with self._lock:
            if len(self._cache) > 10_000:  # names come from callers: keep it bounded
                self._cache.clear()
            self._cache[task_name] = (now, declared)
        return declared

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    @staticmethod
    def _read(tq: TaskQueue, task_name: str) -> Declared | None:
        try:
            rows = tq._run(job_sql.DECLARED_OPTIONS, {"task": task_name})
        except Exception as exc:  # no registry in this schema, database away: defaults
            log.debug("declared options of %s unavailable: %s", task_name, exc)
            return None
        if not rows:
            return None
        queue, priority, max_attempts = rows[0]
        return Declared(queue, int(priority), int(max_attempts))
