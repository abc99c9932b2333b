"""What PostgreSQL will store, and JSON that Python will read: the worker's safety margins.

A job's outcome is written by the completer in one statement with a batch of others, so
one value PostgreSQL refuses would hold back the whole batch. ``text`` cannot hold NUL or
a lone surrogate (Python strings can: ``os.listdir()`` on a non-UTF-8 file name gives
one), ``jsonb`` refuses ``\\u0000`` and unpaired ``\\ud800``-``\\udfff`` escapes, and a
very long value costs every reader. So errors and results are made storable here, before
they reach SQL, keeping what a person needs to read (escapes are backslashed, not
dropped; the end of a long traceback is kept, it names the failing line).

The other way round, ``jsonb`` accepts what Python's ``json`` refuses: integers of more
than 4,300 digits (``sys.set_int_max_str_digits``) and nesting deeper than the stack of
the thread that decodes. ``decode_json`` reports those instead of raising, so one such
job or row never takes a batch of others, or an admin command, down with it.
"""

from __future__ import annotations

import json
from typing import Any

ERROR_MAX_CHARS = 32_000
"""Longest ``last_error`` stored; longer ones keep their head and their tail."""

RESULT_MAX_CHARS = 10_000_000
"""Longest result (as JSON text) stored; a longer one is replaced by a note saying so."""

_HEAD_SHARE = 4
"""A capped text keeps 1/_HEAD_SHARE of the limit from its start, the rest from its end."""


def safe_text(text: str, limit: int = ERROR_MAX_CHARS) -> str:
    """``text`` as PostgreSQL ``text`` can hold it: NUL and lone surrogates backslashed,
    at most ``limit`` characters (the middle of a longer text is cut, and says so)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        head = limit // _HEAD_SHARE
        marker = f"\n[... {len(text) - limit} characters cut by pgtaskq ...]\n"
        tail = max(0, limit - head - len(marker))
        text = text[:head] + marker + text[len(text) - tail:]
    return text


def json_is_storable(text: str, value: Any) -> bool:
    """Whether ``jsonb`` accepts ``text``, the ASCII ``json.dumps`` of ``value``.

    ``json.dumps`` escapes every non-ASCII character, so the only refusals left are NUL
    and unpaired surrogates; the costly check runs only when a surrogate escape appears.
    """
    if "\\u0000" in text:
        return False
    if "\\ud" in text or "\\uD" in text:
        try:
            json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (UnicodeEncodeError, ValueError, RecursionError):
            return False
    return True


class Undecodable:
    """A JSON value stored in PostgreSQL that Python's ``json`` refuses, kept as raw text."""

    __slots__ = ("reason", "text")

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason

    def __repr__(self) -> str:
        return f"<undecodable JSON ({self.reason}): {self.text[:80]!r}>"


def decode_json(text: str | None) -> Any:
    """``json.loads(text)``, or an ``Undecodable`` naming why Python cannot decode it."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except RecursionError:
        return Undecodable(text, "nested deeper than Python can decode")
    except ValueError as exc:  # ints over sys.get_int_max_str_digits() digits, mostly
        return Undecodable(text, f"Python's json refuses it: {exc}")
