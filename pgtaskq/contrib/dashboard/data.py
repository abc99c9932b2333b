"""What the dashboard reads: the stats snapshot, pages of jobs, schedules.

The overview is ``pgtaskq.operations.stats.collect`` (per-minute rollups and index probes, never a
count of the job tables), the same figures as ``pgtaskq stats``. Job pages walk a primary
key from a cursor (``sql/dashboard.py``), so they cost the same on page one and page one
thousand, with a million rows or ten.
"""

from __future__ import annotations

from dataclasses import dataclass

from pgtaskq.job import FINAL_STATUSES, LIVE_STATUSES, Job
from pgtaskq.operations import stats
from pgtaskq.queue import TaskQueue
from pgtaskq.sql import dashboard as dashboard_sql
from pgtaskq.sql import render

SCAN_WINDOW = 200_000
"""Ids below the cursor a filtered page looks through at most (~0.1 s on 2 cores)."""

FILTERS = ("status", "queue", "task", "q")


@dataclass
class JobsPage:
    jobs: list[Job]
    older: int | None
    """Cursor of the next (older) page, None at the end."""
    scanned_to: int | None
    """Set when a filtered page found fewer matches than it shows in its window: the id
    it looked down to, from which the next page goes on."""


def snapshot(tq: TaskQueue) -> stats.Snapshot:
    with tq.connection() as conn:
        return stats.collect(conn, tq.schema, failures=10)


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching ``text`` anywhere, its own wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def jobs_page(tq: TaskQueue, filters: dict[str, str | None], before: int | None,
              limit: int = 50) -> JobsPage:
    """Jobs newest first below ``before`` (None: the newest), filtered."""
    status = filters.get("status") or None
    filtered = any(filters.get(name) for name in FILTERS)
    with tq.connection() as conn:
        if before is None:
            (top,) = conn.execute(render(tq.schema, dashboard_sql.MAX_ID)).fetchone()
            before = int(top or 0) + 1
        floor = max(0, before - SCAN_WINDOW) if filtered else 0
        text = filters.get("q") or None
        params = {"before": before, "floor": floor, "status": status,
                  "queue": filters.get("queue") or None, "task": filters.get("task") or None,
                  "text": like_pattern(text) if text else None, "limit": limit}
        rows: list[tuple] = []
        if status is None or status in LIVE_STATUSES:
            rows += conn.execute(render(tq.schema, dashboard_sql.JOBS_PAGE_LIVE),
                                 params).fetchall()
        if status is None or status in FINAL_STATUSES:
            rows += conn.execute(render(tq.schema, dashboard_sql.JOBS_PAGE_HISTORY),
                                 params).fetchall()
    rows.sort(key=lambda row: row[0], reverse=True)
    found = [Job.from_row(row) for row in rows[:limit]]
    if len(found) == limit:
        return JobsPage(found, found[-1].id, None)
    if floor > 1:
        return JobsPage(found, floor, floor)
    return JobsPage(found, None, None)
