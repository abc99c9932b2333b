"""Click parameter types for durations: ``90s``, ``15m``, ``3h``, ``3d``, or seconds.

Both refuse NaN and infinity, which ``float()`` and ``click.FloatRange`` accept from the
shell (``--poll-interval inf``, ``--watch nan``) and which would then stop a worker's
thread or spin a watch loop.
"""

from __future__ import annotations

import math
from typing import Any

import click

from pgtaskq import duration


class Duration(click.ParamType):
    """Accepts ``pgtaskq.duration.parse`` syntax; a number is seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value > 0:
                return float(value)
            self.fail(f"must be more than 0, got {value}", param, ctx)
        try:
            return duration.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


class Seconds(click.FloatRange):
    """A finite number of seconds within a range (``click.FloatRange`` takes ``inf``)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"must be a finite number of seconds, got {value!r}", param, ctx)
        return float(seconds)

