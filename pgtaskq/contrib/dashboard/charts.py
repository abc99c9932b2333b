"""Charts as inline SVG, drawn on the server: no chart library, no script, no build step.

Each function returns markup sized by its ``viewBox`` so CSS can scale it; titles on the
bars give the exact figure on hover, and every chart carries a text label for people who
do not see it (``role="img"`` plus ``aria-label``).
"""

from __future__ import annotations

from collections.abc import Sequence

from pgtaskq.contrib.dashboard.markup import Safe, html, join


def bars(values: Sequence[int], *, label: str, width: int = 240, height: int = 40,
         unit: str = "jobs/min") -> Safe:
    """Vertical bars, one per value, oldest left (finished jobs per minute)."""
    top = max(values, default=0)
    step = width / max(1, len(values))
    rects = []
    for index, value in enumerate(values):
        if value <= 0:
            continue
        bar = max(1.0, height * value / top)
        age = len(values) - 1 - index
        rects.append(html(
            '<rect x="{x}" y="{y}" width="{w}" height="{h}"><title>{t}</title></rect>',
            x=f"{index * step:.1f}", y=f"{height - bar:.1f}", w=f"{max(0.5, step - 1):.1f}",
            h=f"{bar:.1f}", t=f"{value:,} {unit}, {age} min ago"))
    return html(
        '<svg class="chart bars" viewBox="0 0 {w} {h}" preserveAspectRatio="none" '
        'role="img" aria-label="{label}"><line x1="0" y1="{h}" x2="{w}" y2="{h}"/>'
        '{rects}</svg>',
        w=width, h=height, label=f"{label}: max {top:,} {unit}", rects=join(rects))


def levels(items: Sequence[tuple[str, int, str]], *, label: str, width: int = 240) -> Safe:
    """Horizontal bars of a few named figures (name, value, css class), to one scale."""
    top = max((value for _, value, _ in items), default=0)
    row = 14
    parts = []
    for index, (name, value, css) in enumerate(items):
        length = 0.0 if top <= 0 else max(1.0, (width - 90) * value / top)
        parts.append(html(
            '<text x="0" y="{ty}">{name}</text>'
            '<rect class="{css}" x="60" y="{y}" width="{w}" height="10">'
            '<title>{name}: {v}</title></rect>'
            '<text x="{vx}" y="{ty}">{v}</text>',
            ty=index * row + 10, y=index * row + 1, name=name, css=css,
            w=f"{length:.1f}", v=f"{value:,}", vx=f"{64 + length:.1f}"))
    return html(
        '<svg class="chart levels" viewBox="0 0 {w} {h}" role="img" aria-label="{label}">'
        '{parts}</svg>',
        w=width, h=len(items) * row, label=label, parts=join(parts))
