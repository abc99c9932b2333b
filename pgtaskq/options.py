"""Validation of every value users hand pgtaskq: every check runs before any SQL.

Bad input gets an error naming the problem, so a typo never becomes a half-written or
silently wrong job, and nothing reaches the server that it would refuse (which, with
``conn=``, would abort the caller's transaction) or that a worker could not read back.
Errors are ``ConfigurationError`` (a ``ValueError``) for a bad value and ``TypeError`` for
a value of the wrong type, whatever the path (decorator, enqueue, worker, CLI).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pgtaskq.errors import ConfigurationError

QUEUE_NAME_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,100}")
INT32_MAX = 2**31 - 1

MAX_NAME_LENGTH = 200
"""Characters in a task or schedule name: at most 800 bytes of UTF-8, well inside what one
B-tree index entry holds (about 2,700 bytes) in ``jobs``, ``job_history`` and the
registry, with room for the other columns of those indexes."""

MAX_DEDUPE_KEY_LENGTH = 500
"""Characters in a dedupe key (the unique index ``jobs_dedupe_key`` holds it whole)."""

MAX_DELAY = 100 * 365.25 * 86400
"""Longest ``delay`` in seconds (100 years): far beyond it PostgreSQL's timestamps overflow."""

MAX_JSON_DEPTH = 100
"""Deepest nesting of lists and dicts in args/kwargs. The worker decodes them deeper in
its stack than the producer encodes them; without a limit a job ~990 levels deep is
accepted and then fails every attempt with a RecursionError."""

MAX_INT_DIGITS = 4300
"""Digits of the longest int in args/kwargs: Python's default limit on int/str
conversion, which the worker's JSON decoder applies whatever the producer set."""

_UNPRINTABLE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
"""Control characters (C0, DEL, C1), line and bidirectional-override marks, and lone
surrogates (any surrogate in a ``str`` is lone: UTF-8 cannot encode it)."""

_STORABLE = re.compile(r"[\x00\ud800-\udfff]")
"""What PostgreSQL's ``text`` cannot hold: NUL, and lone surrogates (not UTF-8)."""

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

_LONG_DIGITS = re.compile(rf"\d{{{MAX_INT_DIGITS + 1}}}")
_LONE_SURROGATE = re.compile(
    r"(?<!\\)(?:\\\\)*(?:\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f][0-9a-f]{2})"
    r"|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2})"
)
"""A ``\\udXXX`` escape that is not half of a surrogate pair (ensure_ascii output)."""


def dump_json(value: object, wrappers: int = 0) -> str:
    """JSON text of ``value``; ``TypeError`` naming the first unserialisable value's type,
    ``ConfigurationError`` for what PostgreSQL or the worker could not take back.

    ``wrappers``: levels of nesting around the jobs' values that do not count towards
    ``MAX_JSON_DEPTH`` (``enqueue_many`` sends every job's args in one array).
    """
    try:
        text = _ENCODER.encode(value)
    except RecursionError:
        raise ConfigurationError(
            f"job arguments are nested too deep (the limit is {MAX_JSON_DEPTH} levels)"
        ) from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            raise ConfigurationError(_too_many_digits()) from None
        # NaN / Infinity: PostgreSQL's jsonb rejects them
        raise TypeError(f"job arguments must be JSON-serialisable: {exc}") from None
    # Plain substring tests first: this runs on every enqueue.
    if "\\u0000" in text:
        _refuse_nul(text)
    if "\\ud" in text and _LONE_SURROGATE.search(text):
        raise ConfigurationError(
            "job arguments contain a lone surrogate code point (not valid Unicode): "
            "PostgreSQL cannot store it"
        )
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH + wrappers:
        _check_depth(text, MAX_JSON_DEPTH + wrappers)
    if len(text) > MAX_INT_DIGITS and _LONG_DIGITS.search(text):
        _check_int_digits(value)
    return text


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _check_depth(text: str, limit: int) -> None:
    """Refuse JSON nested deeper than ``limit`` (only run when it could be)."""
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > limit:
                raise ConfigurationError(
                    f"job arguments are nested too deep (the limit is {MAX_JSON_DEPTH} levels)"
                )
        elif bracket in "]}":
            depth -= 1


def _too_many_digits() -> str:
    return (f"job arguments hold an int of more than {MAX_INT_DIGITS} digits, which a "
            "worker cannot decode; pass it as a string")


def _check_int_digits(value: object) -> None:
    """Refuse ints a worker's JSON decoder would refuse (when the text has a long run of
    digits, which may also be inside a string)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if item.bit_length() > MAX_INT_DIGITS * 3.32:  # about 10**4300
                raise ConfigurationError(_too_many_digits())
        elif isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)


_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
"""``\\u0000`` as an escape (not as the text ``\\\\u0000``: an escaped backslash)."""


def _refuse_nul(text: str) -> None:
    """Refuse U+0000, which jsonb cannot store, before any SQL: failing in the database
    instead would abort the caller's transaction when ``conn=`` is used."""
    if _NUL_ESCAPE.search(text):
        raise ConfigurationError(
            "job arguments cannot contain the NUL character '\\x00': "
            "PostgreSQL cannot store it in jsonb"
        )


def check_name(what: str, name: object, max_length: int = MAX_NAME_LENGTH) -> str:
    """A task or schedule name: a non-blank str of printable characters, not too long.

    Control characters would reach terminals through ``jobs``/``stats`` and the worker's
    log; NUL and lone surrogates cannot be stored (a worker registering such a task would
    fail every claim); an over-long name does not fit the B-tree indexes.
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string, got {type(name).__name__}")
    if not name.strip():
        raise ConfigurationError(f"{what} must be a non-empty string, got {name!r}")
    if len(name) > max_length:
        raise ConfigurationError(
            f"{what} is {len(name)} characters long; the limit is {max_length}: {name!r:.60}"
        )
    bad = _UNPRINTABLE.search(name)
    if bad:
        raise ConfigurationError(
            f"{what} {name!r:.80} contains {_describe(bad.group())} at position {bad.start()}"
        )
    return name


def _describe(char: str) -> str:
    if char == "\x00":
        return "the NUL character '\\x00' (PostgreSQL text cannot hold it)"
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate {char!r} (not valid Unicode)"
    return f"the control character {char!r}"


def check_task_name(name: object) -> str:
    return check_name("task name", name)


def check_schedule_name(name: object) -> str:
    return check_name("schedule name", name)


def check_queue(queue: object) -> str:
    if not isinstance(queue, str):
        raise TypeError(f"queue must be a string, got {type(queue).__name__}")
    if not QUEUE_NAME_RE.fullmatch(queue):
        raise ConfigurationError(
            f"invalid queue name {queue!r}: use 1-100 letters, digits or '_.:-'"
        )
    return queue


def check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"priority must be an int, got {type(priority).__name__}")
    if not -INT32_MAX <= priority <= INT32_MAX:
        raise ConfigurationError(f"priority {priority} is out of range (32-bit integer)")
    return priority


def check_max_attempts(max_attempts: object) -> int:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
        raise TypeError(f"max_attempts must be an int, got {type(max_attempts).__name__}")
    if not 1 <= max_attempts <= INT32_MAX:
        raise ConfigurationError(f"max_attempts must be at least 1, got {max_attempts}")
    return max_attempts


def check_seconds(what: str, value: object, *, zero_ok: bool = False,
                  maximum: float | None = None) -> float:
    """A finite number of seconds, > 0 (>= 0 with ``zero_ok``), at most ``maximum``.

    NaN compares false with everything and infinity passes ``> 0``: either would reach a
    thread's ``wait()`` or the server's interval arithmetic and fail far from the cause.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or not (value >= 0 if zero_ok else value > 0):
        bound = ">= 0" if zero_ok else "> 0"
        raise ConfigurationError(
            f"{what} must be a finite number of seconds {bound}, got {value!r}"
        )
    if maximum is not None and value > maximum:
        raise ConfigurationError(
            f"{what} must be at most {maximum:.0f} seconds, got {value!r}"
        )
    return float(value)


def check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    return check_seconds("timeout", timeout)


def check_schedule(delay: object, run_at: object) -> tuple[float, datetime | None]:
    """Validate ``delay``/``run_at``; return (delay seconds, aware run_at or None)."""
    if delay is not None and run_at is not None:
        raise ConfigurationError("give delay or run_at, not both")
    seconds = 0.0
    if delay is not None:
        seconds = check_seconds("delay", delay, zero_ok=True, maximum=MAX_DELAY)
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise TypeError(f"run_at must be a datetime, got {type(run_at).__name__}")
        if run_at.tzinfo is None or run_at.tzinfo.utcoffset(run_at) is None:
            raise ConfigurationError(
                f"run_at must be timezone-aware (naive datetime {run_at.isoformat()} given); "
                "use datetime.now(timezone.utc) or attach a tzinfo"
            )
    return seconds, run_at  # type: ignore[return-value]


def check_dedupe_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key:
        raise TypeError(f"dedupe_key must be a non-empty string or None, got {key!r:.80}")
    if len(key) > MAX_DEDUPE_KEY_LENGTH:
        raise ConfigurationError(
            f"dedupe_key is {len(key)} characters long; the limit is {MAX_DEDUPE_KEY_LENGTH}"
        )
    bad = _STORABLE.search(key)
    if bad:
        raise ConfigurationError(
            f"dedupe_key {key!r:.80} contains {bad.group()!r}, which PostgreSQL cannot store"
        )
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
        "args": dump_json(args_list, wrappers=1),
        "kwargs": dump_json(kwargs_list, wrappers=1) if any_kwargs else None,
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

    if item.get("queue") is not None:
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
