"""A click parameter type for durations (``90s``, ``15m``, ``3h``, ``3d``), in seconds."""

from __future__ import annotations

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
