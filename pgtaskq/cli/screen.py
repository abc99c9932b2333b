"""``pgtaskq stats --watch`` on a terminal: one screen that fits, redrawn in place.

The full dashboard (``pgtaskq.cli.stats.render``) is a report: on an 80x24 terminal its
queue table wrapped every row and scrolled off the top. This view is built for the
terminal's size: the queue table first (it is what an operator watches), with columns
added in order of importance while they fit, rows cut with a "more" line when they do
not, then the workers and the newest failures in whatever lines remain. Every line is cut
to the width, and the frame never has more lines than the terminal, so drawing it from the
top-left corner (``HOME``) and clearing what is left (``CLEAR_LINE``, ``CLEAR_BELOW``)
replaces the previous frame without scrolling or flicker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone

from pgtaskq.duration import format_age, format_ms
from pgtaskq.operations import stats
from pgtaskq.printable import printable

HOME = "\x1b[H"
CLEAR_LINE = "\x1b[K"
CLEAR_BELOW = "\x1b[J"
MIN_TASK_WIDTH = 20
GAP = "  "


@dataclass
class Column:
    header: str
    value: Callable[[stats.Row], str]
    left: bool = False


def _count(value: int, estimated: bool) -> str:
    return ("~" if estimated and value else "") + f"{value:,}"


def _latency(row: stats.Row, which: str) -> str:
    p = row.percentiles(which)
    return "" if p["p50"] is None else f"{format_ms(p['p50'])}/{format_ms(p['p95'])}"


COLUMNS = [
    Column("queue", lambda r: r.queue or "", left=True),
    Column("task", lambda r: r.task or "", left=True),
    Column("ready", lambda r: _count(r.ready, r.estimated)),
    Column("running", lambda r: f"{r.running:,}"),
    Column("oldest", lambda r: format_age(r.oldest_ready_age)),
    Column("failed 1h", lambda r: f"{r.failed['1h']:,}"),
    Column("jobs/s", lambda r: f"{r.throughput:,.1f}"),
    Column("ok 1h", lambda r: f"{r.succeeded['1h']:,}"),
    Column("sched", lambda r: _count(r.scheduled, r.estimated)),
    Column("wait p50/95", lambda r: _latency(r, "wait")),
    Column("run p50/95", lambda r: _latency(r, "run")),
    Column("retried 1h", lambda r: f"{r.retried_1h:,}"),
]
"""Queue table columns, most important first: the first ones always shown."""


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def _cut_left(text: str, width: int) -> str:
    """Task names share their module prefix and differ at the end: keep the end."""
    return text if len(text) <= width else "…" + text[len(text) - max(0, width - 1):]


def _table(rows: list[stats.Row], width: int, paused: set[str]) -> list[str]:
    """Header and rows of the columns that fit in ``width``; the last row is the total."""
    cells = [[c.value(r) for c in COLUMNS] for r in rows]
    cells[-1][0] = "TOTAL"
    for line, row in zip(cells, rows, strict=True):
        if row.queue in paused:
            line[0] += " (paused)"
    widths = [max([len(c.header)] + [len(line[i]) for line in cells])
              for i, c in enumerate(COLUMNS)]
    widths[1] = min(widths[1], max(MIN_TASK_WIDTH, len(COLUMNS[1].header)))
    chosen = [0, 1]
    used = widths[0] + len(GAP) + widths[1]
    for index in range(2, len(COLUMNS)):
        if used + len(GAP) + widths[index] <= width:
            chosen.append(index)
            used += len(GAP) + widths[index]
    # Give what is left to the task names (they are the first thing cut).
    full_task = max([len(COLUMNS[1].header)] + [len(line[1]) for line in cells])
    widths[1] += min(max(0, width - used), max(0, full_task - widths[1]))

    def fmt(values: list[str]) -> str:
        parts = []
        for index in chosen:
            text = (_cut_left if index == 1 else _cut)(values[index], widths[index])
            parts.append(text.ljust(widths[index]) if COLUMNS[index].left
                         else text.rjust(widths[index]))
        return GAP.join(parts).rstrip()

    return [fmt([c.header for c in COLUMNS])] + [fmt(line) for line in cells]


def render_fitted(snapshot: stats.Snapshot, schema: str, width: int, height: int) -> str:
    """The dashboard in at most ``height`` lines of at most ``width`` characters."""
    width, height = max(20, width), max(5, height)
    at = snapshot.at.astimezone(timezone.utc).strftime("%H:%M:%S UTC")
    live = [w for w in snapshot.workers if w.status == "alive"]
    slots = sum(w.concurrency for w in live)
    title = (f"pgtaskq stats {schema} {at}  "
             + (f"{len(live)} workers, {slots} slots" if live else "NO LIVE WORKER"))
    paused = set(snapshot.paused or [])
    table = _table([*snapshot.tasks, snapshot.total], width, paused)
    header, rows, total = table[0], table[1:-1], table[-1]
    room = height - 1 - 3  # title, header, total, one line of notes or workers
    if len(rows) > room:
        hidden = len(rows) - (room - 1)
        rows = [*rows[:room - 1], f"… {hidden} more rows (--queue / --task to narrow)"]
    lines = [title, header, *rows, total]
    if paused:
        lines.append("PAUSED: " + ", ".join(sorted(paused)))
    notes = "~ estimated from a sample; " if snapshot.estimated else ""
    lines.append(notes + "1h: current minute + 60 before; jobs/s over 1m; p50/95 over 5m")
    rest = height - len(lines)
    if rest >= 2 and snapshot.workers:
        lines.append("workers (busy slots as of their last heartbeat):")
        for w in snapshot.workers[: rest - 1]:
            lines.append(f"  {w.id} {w.host}[{w.pid}] {w.status}, busy {w.busy}/"
                         f"{w.concurrency}" + (f", {w.stuck} stuck" if w.stuck else "")
                         + f", beat {format_age(w.heartbeat_age)} ago, "
                         f"{w.finished_1m:,} done 1m")
    rest = height - len(lines)
    if rest >= 2 and snapshot.failures:
        lines.append("recent failures:")
        for f in snapshot.failures[: rest - 1]:
            when = f.finished_at.astimezone(timezone.utc).strftime("%H:%M:%S")
            lines.append(f"  {when} job {f.job_id} {f.task}: {f.error}")
    # printable before cutting: an escape sequence must neither reach the terminal nor
    # count as one column
    return "\n".join(_cut(printable(line), width) for line in lines[:height])


def frame(text: str) -> str:
    """``text`` drawn over the previous frame: home, each line cleared to its end, the
    rest of the screen cleared, and no final newline (that would scroll a full screen)."""
    return HOME + (CLEAR_LINE + "\n").join(text.split("\n")) + CLEAR_LINE + CLEAR_BELOW
