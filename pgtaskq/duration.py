"""Durations as operators type and read them: ``90s``, ``15m``, ``3h``, ``3d``, ``1h30m``.

Retention and health thresholds span seconds to weeks; a bare number of seconds
(``604800``) is error-prone at a shell, so options take units, and output shows ages in
the same compact form.
"""

from __future__ import annotations

import math
import re

from pgtaskq.errors import ConfigurationError

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse(text: str) -> float:
    """Seconds in ``text``: a number (seconds) or unit parts like ``1h30m``; ValueError if
    it is neither or not positive."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        position, seconds = 0, 0.0
        for match in _PART.finditer(value):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * UNITS[match.group(2)]
            position = match.end()
        if position != len(value) or not value:
            raise ConfigurationError(
                f"invalid duration {text!r}: use a number of seconds or units such as "
                "90s, 15m, 3h, 3d, 1w, 1h30m"
            ) from None
    if not seconds > 0 or not math.isfinite(seconds):
        raise ConfigurationError(f"invalid duration {text!r}: must be a finite number more than 0")
    return seconds


def format_age(seconds: float | None) -> str:
    """Compact, human age: ``850ms``, ``42s``, ``3m05s``, ``2h10m``, ``3d4h``; '' for None."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600}h"


def format_ms(ms: float | None) -> str:
    """A latency in ms as ``0.4ms``, ``12ms``, ``3.2s``, ``4m10s``; '' for None."""
    if ms is None:
        return ""
    if ms < 10:
        return f"{ms:.1f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return format_age(ms / 1000)
