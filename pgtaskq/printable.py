"""Escape control characters before text from the database reaches a terminal or a log.

Task names, queue names, errors and arguments are written by producers and by the tasks
themselves; an escape sequence among them (``\\x1b]0;...``, a cursor move, a bidi
override) printed raw by ``pgtaskq jobs``/``show``/``stats`` or a worker's log would let
whoever enqueued a job rewrite an operator's screen or forge log lines. Output shows such
characters as Python-style escapes (``\\x1b``), which keeps them visible and harmless.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
"""C0 but tab and newline, DEL, C1, line/paragraph separators, bidi controls, surrogates."""

_CONTROL_AND_LAYOUT = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, multiline: bool = False) -> str:
    """``text`` with control characters escaped; newlines and tabs kept if ``multiline``."""
    pattern = _CONTROL if multiline else _CONTROL_AND_LAYOUT
    if pattern.search(text) is None:  # the common case costs one scan
        return text
    return pattern.sub(_escape, text)


def printable_cells(rows: list[list[object]]) -> list[list[object]]:
    """Table rows with every string cell made printable (one line each)."""
    return [[printable(cell) if isinstance(cell, str) else cell for cell in row]
            for row in rows]
