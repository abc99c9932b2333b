"""Validation of what callers pass to enqueue: every check runs before any SQL.

Bad input gets an error naming the problem, so a typo never becomes a half-written or
silently wrong job.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")
INT32_MAX = 2**31 - 1

ENQUEUE_OPTIONS = (
    "queue", "priority", "delay", "run_at", "dedupe_key", "max_attempts", "conn",
)
"""Names ``Task.using()`` accepts."""

MANY_ITEM_KEYS = (
    "args", "kwargs", "queue", "priority", "delay", "run_at", "dedupe_key", "max_attempts",
)
"""Keys an ``enqueue_many`` item may have."""


def _refuse(value: object) -> Any:
    raise TypeError(
        f"job arguments must be JSON-serialisable; a value of type "
        f"{type(value).__name__} is not: {value!r:.80}"
    )


_ENCODER = json.JSONEncoder(default=_refuse, allow_nan=False, separators=(",", ":"))
"""One encoder for every enqueue: ``json.dumps`` with options builds a new one per call."""


def dump_json(value: object) -> str:
    """JSON text of ``value``; ``TypeError`` naming the first unserialisable value's type."""
    try:
        text = _ENCODER.encode(value)
    except ValueError as exc:  # NaN / Infinity: PostgreSQL's jsonb rejects them
        raise TypeError(f"job arguments must be JSON-serialisable: {exc}") from None
    if "\\u0000" in text:  # a plain substring test first: this runs on every enqueue
        _refuse_nul(text)
    return text


_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
"""``\\u0000`` as an escape (not as the text ``\\\\u0000``: an escaped backslash)."""


def _refuse_nul(text: str) -> None:
    """Refuse U+0000, which jsonb cannot store, before any SQL: failing in the database
    instead would abort the caller's transaction when ``conn=`` is used."""
    if _NUL_ESCAPE.search(text):
        raise ValueError(
            "job arguments cannot contain the NUL character '\\x00': "
            "PostgreSQL cannot store it in jsonb"
        )


def check_task_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"task name must be a non-empty string, got {name!r}")
    return name


def check_queue(queue: object) -> str:
    if not isinstance(queue, str) or not QUEUE_NAME_RE.match(queue):
        raise ValueError(
            f"invalid queue name {queue!r}: use 1-100 letters, digits or '_.:-'"
        )
    return queue


def check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, got {type(priority).__name__}")
    if not -INT32_MAX <= priority <= INT32_MAX:
        raise ValueError(f"priority {priority} is out of range (32-bit integer)")
    return priority


def check_max_attempts(max_attempts: object) -> int:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
        raise TypeError(f"max_attempts must be an int, got {type(max_attempts).__name__}")
    if not 1 <= max_attempts <= INT32_MAX:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    return max_attempts


def check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if not timeout > 0 or math.isinf(timeout):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def check_schedule(delay: object, run_at: object) -> tuple[float, datetime | None]:
    """Validate ``delay``/``run_at``; return (delay seconds, aware run_at or None)."""
    if delay is not None and run_at is not None:
        raise ValueError("give delay or run_at, not both")
    seconds = 0.0
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)):
            raise TypeError(f"delay must be a number of seconds, got {type(delay).__name__}")
        if not delay >= 0 or math.isinf(delay):
            raise ValueError(f"delay must be a finite number of seconds >= 0, got {delay!r}")
        seconds = float(delay)
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise TypeError(f"run_at must be a datetime, got {type(run_at).__name__}")
        if run_at.tzinfo is None or run_at.tzinfo.utcoffset(run_at) is None:
            raise ValueError(
                f"run_at must be timezone-aware (naive datetime {run_at.isoformat()} given); "
                "use datetime.now(timezone.utc) or attach a tzinfo"
            )
    return seconds, run_at  # type: ignore[return-value]


def check_dedupe_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise TypeError(f"dedupe_key must be a non-empty string or None, got {key!r}")
    return key


def check_args(args: object, kwargs: object) -> tuple[str, str]:
    """JSON texts of args and kwargs, after checking their shapes."""
    if args is None:
        args = ()
    elif not isinstance(args, (list, tuple)):
        raise TypeError(f"args must be a list or tuple, got {type(args).__name__}")
    if not kwargs:
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"kwargs must be a dict, got {type(kwargs).__name__}")
        return dump_json(args), "{}"
    return dump_json(args), dump_json(_checked_kwargs(kwargs))


def _checked_kwargs(kwargs: object) -> dict[str, Any]:
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"kwargs must be a dict, got {type(kwargs).__name__}")
    for key in kwargs:
        if not isinstance(key, str):
            raise TypeError(f"kwargs keys must be strings, got {key!r}")
    return kwargs if type(kwargs) is dict else dict(kwargs)


_ARGS_ONLY = frozenset(("args", "kwargs"))
_EMPTY_KWARGS: dict[str, Any] = {}


def many_job_columns(jobs: Sequence[Any]) -> dict[str, Any]:
    """Validate ``enqueue_many`` items; return the statement's per-job parameters.

    This loop runs once per job, so it is the producer's cost of a bulk enqueue: an item
    holding only args/kwargs (the common case) takes a few type checks, and all the args
    are serialised in one call of the C JSON encoder, as one JSON array the server splits.
    An option is sent as an array only when some item sets it; otherwise it is ``None``
    and the statement applies the task's default.
    """
    count = len(jobs)
    args_list: list[Any] = []
    kwargs_list: list[Any] = []
    any_kwargs = False
    overrides: dict[str, list[Any]] = {}
    for position, item in enumerate(jobs):
        if not isinstance(item, Mapping):
            raise TypeError(f"enqueue_many() item {position} is not a dict: {item!r:.60}")
        if not item.keys() <= _ARGS_ONLY:
            check_option_names(item, MANY_ITEM_KEYS, "enqueue_many() items")
            _collect_options(item, position, count, overrides)
        args = item.get("args")
        if args is None:
            args = ()
        elif not isinstance(args, (list, tuple)):
            raise TypeError(f"args must be a list or tuple, got {type(args).__name__}")
        args_list.append(args)
        kwargs = item.get("kwargs")
        if kwargs:
            kwargs_list.append(_checked_kwargs(kwargs))
            any_kwargs = True
        else:
            if kwargs is not None and not isinstance(kwargs, Mapping):
                raise TypeError(f"kwargs must be a dict, got {type(kwargs).__name__}")
            kwargs_list.append(_EMPTY_KWARGS)
    return {
        "args": dump_json(args_list),
        "kwargs": dump_json(kwargs_list) if any_kwargs else None,
        "queues": overrides.get("queue"),
        "priorities": overrides.get("priority"),
        "run_ats": overrides.get("run_at"),
        "delays": overrides.get("delay"),
        "max_attempts": overrides.get("max_attempts"),
        "dedupe_keys": overrides.get("dedupe_key"),
    }


def _collect_options(
    item: Mapping[str, Any], position: int, count: int, overrides: dict[str, list[Any]]
) -> None:
    """Check one item's options and put them in per-option columns made on first use."""

    def put(name: str, value: object) -> None:
        column = overrides.get(name)
        if column is None:
            column = overrides[name] = [None] * count
        column[position] = value

    if item.get("queue"):
        put("queue", check_queue(item["queue"]))
    if item.get("priority") is not None:
        put("priority", check_priority(item["priority"]))
    if item.get("max_attempts") is not None:
        put("max_attempts", check_max_attempts(item["max_attempts"]))
    delay, run_at = item.get("delay"), item.get("run_at")
    if delay is not None or run_at is not None:
        seconds, run_at = check_schedule(delay, run_at)
        if delay is not None:
            put("delay", seconds)
        if run_at is not None:
            put("run_at", run_at)
    if item.get("dedupe_key") is not None:
        put("dedupe_key", check_dedupe_key(item["dedupe_key"]))


def check_option_names(given: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise TypeError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for {where}; valid: {', '.join(allowed)}"
        )
