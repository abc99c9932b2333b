"""HTML built from templates whose every value is escaped unless it is already markup.

Job arguments, errors, task and queue names are user data: a job enqueued with
``<script>`` in its arguments must show as text. Pages are composed with :func:`html`,
which escapes each value it is given (``html.escape``, quotes included, so values are safe
in attributes too) unless the value is :class:`Safe`, the type of what ``html`` returns.
No string reaches a page without passing through it.
"""

from __future__ import annotations

import html as html_lib
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode


class Safe(str):
    """Text that is already HTML (the output of :func:`html`, or a constant)."""

    __slots__ = ()


def escape(value: Any) -> Safe:
    """``value`` as HTML text: markup kept, anything else converted and escaped."""
    if isinstance(value, Safe):
        return value
    return Safe(html_lib.escape("" if value is None else str(value), quote=True))


def html(template: str, **values: Any) -> Safe:
    """Fill ``template``'s ``{name}`` fields with escaped ``values``."""
    return Safe(template.format(**{k: escape(v) for k, v in values.items()}))


def join(parts: Iterable[Any], separator: str = "") -> Safe:
    """Concatenate escaped parts."""
    return Safe(separator.join(escape(part) for part in parts))


def query(**params: Any) -> str:
    """A URL query string of the non-empty ``params`` (escape it when put in a page)."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return ("?" + urlencode(kept)) if kept else ""
