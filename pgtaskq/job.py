"""The ``Job`` record returned by ``TaskQueue.get_job`` and ``jobs``: a plain snapshot."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
LIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = ("succeeded", "failed", "cancelled")


@dataclasses.dataclass(frozen=True)
class Job:
    """One job as the database saw it when it was read; re-read it to see changes."""

    id: int
    task: str
    queue: str
    status: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None
    result: Any
    dedupe_key: str | None = None
    worker_id: int | None = None
    cancel_requested: bool = False

    @classmethod
    def from_row(cls, row: tuple) -> Job:
        """Build a Job from a row in the column order of ``sql.jobs.JOB_COLUMNS``.

        Rows come from pgtaskq's own psycopg 3 connections, which decode jsonb already (a
        stored JSON string, like the repr of an unserialisable result, stays a string).
        """
        return cls(*row)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (datetimes as ISO 8601 strings)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out
