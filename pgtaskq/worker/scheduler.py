"""The cron scheduler every worker runs: turns due ticks into jobs, exactly once overall.

There is no leader. Each worker computes the next tick of each schedule itself and, when
it is due, runs ``SCHEDULE_FIRE``, which enqueues the job only if it moves the schedule's
watermark (``last_tick``) forward; every other worker's attempt at the same tick inserts
nothing. A worker that dies at any point leaves the others firing the next ticks, so
there is nothing to fail over.

It runs in the worker's main thread as a ``LoopTimer``: ``seconds_until_due`` is part of
the ``select()`` timeout, so an idle worker wakes for a tick rather than at its next poll,
and ``run_due`` is a few short statements. Nothing here sleeps: after a database error it
reports a later due time (with backoff) instead of blocking the loop.

Which schedules exist is decided by code, per worker: each worker fires the schedules of
the code it runs. On start it registers them (so ``pgtaskq schedules`` shows the current
set) and marks rows its code lacks inactive; that is bookkeeping for people, never a
switch for other workers, so old and new workers during a rolling deploy, or two
applications sharing a schema, cannot silence each other's cron. A schedule removed from
the code stops firing once no running worker has it.

Missed ticks. At start-up a worker registers its schedules and reads each watermark; a
``run_once`` schedule whose latest tick is after its watermark (ticks passed while no
worker ran) gets that latest tick enqueued once, at once; ``skip`` waits for the next
tick. A running worker that falls behind (database down, process stopped) later runs only
the latest due tick, whatever the policy: never a burst.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from psycopg import sql

from pgtaskq.backoff import Backoff
from pgtaskq.cron import RUN_ONCE, Schedule
from pgtaskq.errors import first_line
from pgtaskq.sql import cron as cron_sql
from pgtaskq.worker.database import Statements

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

log = logging.getLogger("pgtaskq.worker.scheduler")

ERROR_BACKOFF_MIN = 0.5
ERROR_BACKOFF_MAX = 5.0
"""Seconds before retrying after a database error; doubles per failure up to the max, so
a database outage costs the main loop one short attempt every few seconds."""


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def first_due(schedule: Schedule, now: datetime, last_tick: datetime | None,
              defined_at: datetime) -> datetime:
    """The tick a freshly started worker waits for first (the misfire policy).

    A tick counts as missed when it is after both the watermark and the moment this
    definition was registered: a new or changed schedule has missed nothing.
    """
    latest = schedule.latest_tick(now)
    floor = max(defined_at, last_tick) if last_tick is not None else defined_at
    if schedule.misfire == RUN_ONCE and latest > floor:
        return latest
    return schedule.next_tick(now)


class CronScheduler:
    """Fires the ticks of a TaskQueue's schedules from inside a worker's main loop."""

    def __init__(
        self,
        pool: ConnectionPool,
        schema: str,
        channel: str,
        schedules: Mapping[str, Schedule],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = Statements(pool, schema)
        self._channel = channel
        self._schedules = dict(schedules)
        self._clock = clock
        self._jobs_table = sql.Identifier(schema, "jobs").as_string(None)
        self._due: dict[str, datetime] = {}
        self._registered = False
        self._backoff = Backoff(ERROR_BACKOFF_MIN, ERROR_BACKOFF_MAX)
        self._not_before = 0.0
        self._warned: set[str] = set()

    @property
    def due(self) -> dict[str, datetime]:
        """Next tick each schedule waits for (empty until registered)."""
        return dict(self._due)

    # -- LoopTimer ----------------------------------------------------------------------

    def seconds_until_due(self) -> float | None:
        now = self._clock()
        if not self._registered:
            wanted = now
        elif self._due:
            wanted = min(self._due.values()).timestamp()
        else:
            return None
        return max(wanted, self._not_before) - now

    def run_due(self) -> None:
        now = self._clock()
        if now < self._not_before:
            return
        try:
            if not self._registered:
                self.register(now)
            for schedule in self._schedules.values():
                due = self._due.get(schedule.name)
                if due is not None and due.timestamp() <= now:
                    self._fire(schedule, now)
        except Exception as exc:
            pause = self._backoff.failed()
            self._not_before = self._clock() + pause
            log.warning("cron scheduler: %s (next attempt in %.1fs)", first_line(exc), pause)
            return
        if self._backoff.succeeded():
            log.info("cron scheduler works again")

    # -- steps --------------------------------------------------------------------------

    def register(self, now: float) -> None:
        """Upsert this worker's schedules, retire the others, and choose the first ticks."""
        now_dt = _utc(now)
        schedules = sorted(self._schedules.values(), key=lambda s: s.name)
        params = {
            "names": [s.name for s in schedules],
            "expressions": [s.expression for s in schedules],
            "tzs": [s.tz for s in schedules],
            "tasks": [s.task for s in schedules],
            "queues": [s.queue for s in schedules],
            "misfires": [s.misfire for s in schedules],
            "next_ticks": [s.next_tick(now_dt) for s in schedules],
            "now": now_dt,
        }
        rows = self._db.fetchall(cron_sql.SCHEDULE_REGISTER, params)
        retired = sorted(row.name for row in rows if row.kind == "retired")
        due = {}
        for row in rows:
            if row.kind == "registered":
                due[row.name] = first_due(self._schedules[row.name], now_dt, row.last_tick,
                                          row.defined_at)
        self._due = due
        self._registered = True
        self._warned.clear()
        log.info("cron: %d schedules registered (%s)%s", len(due), ", ".join(sorted(due)),
                 f"; no longer in the code, now inactive: {', '.join(retired)}"
                 if retired else "")

    def _fire(self, schedule: Schedule, now: float) -> None:
        # Ticks that passed while this worker was held up collapse into the latest one.
        tick = schedule.latest_tick(_utc(now))
        following = schedule.next_tick(tick)
        params = {
            "jobs_table": self._jobs_table, "name": schedule.name, "tick": tick,
            "next_tick": following, "expression": schedule.expression, "tz": schedule.tz,
            "task": schedule.task, "queue": schedule.queue, "args": schedule.args_json,
            "kwargs": schedule.kwargs_json, "priority": schedule.priority,
            "max_attempts": schedule.max_attempts, "channel": self._channel,
        }
        row = self._db.fetchone(cron_sql.SCHEDULE_FIRE, params)
        assert row is not None
        job_id, exists, registered_as_here = row.job_id, row.registered, row.registered_as_here
        self._due[schedule.name] = following
        if job_id is not None:
            log.info("cron: schedule %s: job %d enqueued for tick %s", schedule.name,
                     job_id, tick.isoformat())
        if not exists:
            # The row is gone (schema reinstalled, row deleted): register again.
            self._registered = False
            log.warning("cron: schedule %s is not in the database; registering again",
                        schedule.name)
        elif not registered_as_here and schedule.name not in self._warned:
            self._warned.add(schedule.name)
            log.warning(
                "cron: schedule %s was retired or redefined by a worker started after this "
                "one; this worker keeps firing its own definition until it is restarted "
                "(all workers of a schema should run the same schedules)", schedule.name)
