"""The ``Job`` record returned by ``TaskQueue.get_job`` and ``jobs``: a plain snapshot."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from pgtaskq.storable import Undecodable, decode_json

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
    failed_attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Every failed attempt, oldest first: ``{"attempt": n, "worker_id": w, "error": text,
    "at": ISO timestamp}`` (error texts capped as ``last_error`` is). A retried attempt
    is here while ``last_error`` keeps only the latest; a job that has not failed yet
    has none. Jobs that failed before schema version 8 show none for those attempts."""
    undecodable: tuple[str, ...] = ()
    """Names of the fields (args, kwargs, result) whose stored JSON Python's ``json``
    cannot decode (a 5,000-digit number, nesting deeper than the stack): each of them
    holds the raw JSON text instead, so such a job can still be shown and cancelled."""

    @classmethod
    def from_row(cls, row: tuple) -> Job:
        """Build a Job from a row in the column order of ``sql.jobs.JOB_COLUMNS``, whose
        args, kwargs and result come as JSON text: decoded here one by one, so one value
        Python refuses marks its job instead of failing the whole listing."""
        values = list(row)
        undecodable = []
        for index, name in _JSON_COLUMNS:
            value = decode_json(values[index])
            if isinstance(value, Undecodable):
                undecodable.append(name)
                value = value.text
            values[index] = value
        if len(values) > _FAILED_ATTEMPTS_COLUMN:
            attempts = decode_json(values[_FAILED_ATTEMPTS_COLUMN])
            values[_FAILED_ATTEMPTS_COLUMN] = attempts if isinstance(attempts, list) else []
        return cls(*values, undecodable=tuple(undecodable))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (datetimes as ISO 8601 strings)."""
        out = dataclasses.asdict(self)
        out["undecodable"] = list(self.undecodable)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out


_JSON_COLUMNS = ((4, "args"), (5, "kwargs"), (14, "result"))
"""Positions of the JSON fields in ``Job``'s (and ``JOB_COLUMNS``') order."""

_FAILED_ATTEMPTS_COLUMN = 18
"""Position of ``failed_attempts`` (JSON text written by pgtaskq itself, so always decodable)."""
