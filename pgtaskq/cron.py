"""Cron schedules: what ``@tq.periodic`` declares, and when its ticks fall.

This module is pure (no database, no threads) so web processes can import task modules
that declare schedules at no cost, and so the tick arithmetic can be tested on its own.
The worker side, which turns due ticks into jobs, is ``pgtaskq.worker.scheduler``.

Ticks are computed by croniter in the schedule's time zone (``zoneinfo``) and handled as
aware UTC datetimes everywhere else. Daylight saving time is croniter's: a wall-clock time
that does not exist (spring forward) fires at the first valid time after the gap (a daily
``30 2 * * *`` in Europe/Berlin fires at 03:00 CEST that day), and a wall-clock time that
occurs twice (fall back) fires twice, once in each offset. Schedules that must run exactly
once a day should use UTC, or a time outside the 01:00-03:00 window.

Expressions have 5 fields (minute hour day-of-month month day-of-week), ``@hourly``-style
aliases, or 6 fields where the 6th is the second, croniter's order: ``* * * * * */10``
fires every 10 seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from pgtaskq import options
from pgtaskq.errors import ConfigurationError
from pgtaskq.task import Task

if TYPE_CHECKING:
    from pgtaskq.queue import TaskQueue

RUN_ONCE = "run_once"
"""Misfire policy: on start-up, run the latest tick missed while no worker ran, once."""

SKIP = "skip"
"""Misfire policy: ticks missed while no worker ran are not run."""

MISFIRE_POLICIES = (RUN_ONCE, SKIP)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One registered schedule: which task to enqueue, with what, on which ticks."""

    name: str
    expression: str
    tz: str
    task: str
    queue: str
    priority: int
    max_attempts: int
    args_json: str
    kwargs_json: str
    misfire: str

    def next_tick(self, after: datetime) -> datetime:
        """The first tick strictly after ``after``, as an aware UTC datetime."""
        return next_tick(self.expression, self.tz, after)

    def latest_tick(self, at: datetime) -> datetime:
        """The last tick at or before ``at``, as an aware UTC datetime."""
        return latest_tick(self.expression, self.tz, at)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        raise ValueError(f"tick arithmetic needs an aware datetime, got {moment.isoformat()}")
    return moment


def next_tick(expression: str, tz: str, after: datetime) -> datetime:
    """First tick of ``expression`` in zone ``tz`` strictly after ``after`` (aware, UTC).

    croniter walks wall-clock time in the zone, which is what makes DST transitions
    behave as the module docstring says.
    """
    local = _aware(after).astimezone(ZoneInfo(tz))
    tick = croniter(expression, local).get_next(datetime)
    return tick.astimezone(timezone.utc)


def latest_tick(expression: str, tz: str, at: datetime) -> datetime:
    """Last tick at or before ``at`` (aware, UTC).

    croniter's ``get_prev`` is strict when ``at`` is exactly on a tick, so the tick after
    the one it returns is checked too.
    """
    local = _aware(at).astimezone(ZoneInfo(tz))
    previous = croniter(expression, local).get_prev(datetime).astimezone(timezone.utc)
    following = next_tick(expression, tz, previous)
    return following if following <= at else previous


def check_expression(expression: object) -> str:
    """Return ``expression`` if croniter can compute ticks of it, else a ConfigurationError.

    A first tick is computed too, so expressions that parse but never match (30 February)
    fail here rather than in a worker.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ConfigurationError(f"invalid cron expression {expression!r}: not a string")
    expression = " ".join(expression.split())
    try:
        croniter(expression, datetime.now(timezone.utc)).get_next(datetime)
    except CroniterBadDateError:
        raise ConfigurationError(
            f"invalid cron expression {expression!r}: it never matches a date"
        ) from None
    except (CroniterError, ValueError, KeyError) as exc:
        raise ConfigurationError(f"invalid cron expression {expression!r}: {exc}") from None
    return expression


def check_tz(tz: object, expression: str) -> str:
    """The IANA key of ``tz`` (a name or a ``ZoneInfo``); error naming the expression."""
    if tz is None:
        return "UTC"
    if tz is timezone.utc:
        return "UTC"
    if isinstance(tz, tzinfo):
        key = getattr(tz, "key", None)
        if not isinstance(key, str):
            raise ConfigurationError(
                f"time zone of schedule {expression!r} must be an IANA name such as "
                f"'Europe/Berlin' or a zoneinfo.ZoneInfo, got {tz!r}"
            )
        tz = key
    if not isinstance(tz, str):
        raise ConfigurationError(
            f"time zone of schedule {expression!r} must be a name, got {type(tz).__name__}"
        )
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"unknown time zone {tz!r} for schedule {expression!r} "
            "(use an IANA name such as 'Europe/Berlin'; on Windows install 'tzdata')"
        ) from None
    return tz


def check_misfire(misfire: object, expression: str) -> str:
    if misfire not in MISFIRE_POLICIES:
        raise ConfigurationError(
            f"misfire of schedule {expression!r} must be one of "
            f"{', '.join(map(repr, MISFIRE_POLICIES))}, got {misfire!r}"
        )
    return str(misfire)


def periodic(
    tq: TaskQueue,
    cron: str,
    *,
    name: str | None = None,
    tz: str | tzinfo | None = None,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    misfire: str = RUN_ONCE,
) -> Callable[[Callable[..., Any]], Task]:
    """Validate a schedule now and return the decorator that registers it on ``tq``.

    Everything is checked before the function is seen, so a typo in an expression fails
    at import time on the developer's machine, not at 3 a.m. in a worker. The function is
    registered as an ordinary task (or reused, if it already is one), so it can also be
    enqueued by hand; the schedule's name defaults to the task's name.
    """
    expression = check_expression(cron)
    zone = check_tz(tz, expression)
    policy = check_misfire(misfire, expression)
    args_json, kwargs_json = options.check_args(args, kwargs)
    if queue is not None:
        options.check_queue(queue)
    if priority is not None:
        options.check_priority(priority)
    if max_attempts is not None:
        options.check_max_attempts(max_attempts)
    if name is not None:
        options.check_task_name(name)
        options.check_schedule_name(name)

    def register(function: Callable[..., Any]) -> Task:
        schedule_name = options.check_schedule_name(
            name or (function.name if isinstance(function, Task)
                     else f"{function.__module__}.{function.__qualname__}"))
        if schedule_name in tq.schedules:
            raise ConfigurationError(
                f"two schedules are named {schedule_name!r} "
                f"({tq.schedules[schedule_name].expression!r} and {expression!r}); "
                "give one of them another name="
            )
        if isinstance(function, Task):
            task = function
        else:
            task = tq.task(function, name=name) if name else tq.task(function)
        schedule = Schedule(
            name=schedule_name,
            expression=expression,
            tz=zone,
            task=task.name,
            queue=task.queue if queue is None else queue,
            priority=priority if priority is not None else task.priority,
            max_attempts=max_attempts if max_attempts is not None else task.max_attempts,
            args_json=args_json,
            kwargs_json=kwargs_json,
            misfire=policy,
        )
        tq.schedules[schedule.name] = schedule
        return task

    return register
