"""Health of a pgtaskq installation, for ``pgtaskq check`` (load balancers, monitoring).

Failing checks are the ones that mean jobs are not being run: no live worker, or a ready
job waiting longer than the threshold. Informational findings are the slow poisons a
queue table suffers from: dead tuples piling up, and whatever holds back the xmin horizon
(an old open transaction, a prepared transaction, a replication slot) so that VACUUM
cannot remove them (DESIGN.md lesson 1); they fail only when a threshold is given.
Every figure comes from catalogs, the workers registry and an index probe: a check costs
milliseconds at any queue size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgtaskq import defaults
from pgtaskq.duration import format_age
from pgtaskq.sql import registry as registry_sql
from pgtaskq.sql import render
from pgtaskq.sql import stats as stats_sql

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
"""Jobs are not being run (or a given threshold is crossed)."""
EXIT_UNKNOWN = 3
"""The check could not run: database unreachable, schema missing, bad DSN. (2 is click's
exit status for a bad command line; 3 is UNKNOWN for Nagios-style monitors too.)"""


@dataclass
class Finding:
    name: str
    ok: bool
    message: str
    failing: bool = True
    """False: reported, but never makes the check fail."""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``ok`` / ``failed`` for findings that decide health, ``info`` / ``warning`` for
        those only reported."""
        if self.failing:
            return "ok" if self.ok else "failed"
        return "info" if self.ok else "warning"


@dataclass
class Report:
    findings: list[Finding]

    @property
    def healthy(self) -> bool:
        return all(f.ok or not f.failing for f in self.findings)

    @property
    def exit_code(self) -> int:
        return EXIT_HEALTHY if self.healthy else EXIT_UNHEALTHY

    def to_json(self) -> dict[str, Any]:
        return {"status": "healthy" if self.healthy else "unhealthy",
                "healthy": self.healthy, "exit_code": self.exit_code,
                "checks": [{"name": f.name, "status": f.status,
                            "decides_health": f.failing, "message": f.message, **f.data}
                           for f in self.findings]}


def unknown_json(error: str) -> dict[str, Any]:
    """The ``--json`` document of a check that could not run."""
    return {"status": "unknown", "healthy": None, "exit_code": EXIT_UNKNOWN,
            "error": error, "checks": []}


def check(conn: psycopg.Connection, schema: str, *, max_age: float, min_workers: int = 1,
          max_xact_age: float | None = None) -> Report:
    """Run every check on the autocommit ``conn``; the schema must be installed."""

    def run(template: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        # Not prepared, for the same reason as in pgtaskq.operations.stats: custom plans only.
        return conn.execute(render(schema, template), params or {}, prepare=False).fetchall()

    findings = []
    alive, registered = run(stats_sql.WORKERS_ALIVE, {
        "lost_beats": defaults.WORKER_LOST_AFTER_BEATS,
        "lost_min": defaults.WORKER_LOST_AFTER_MIN})[0]
    findings.append(Finding(
        "workers", alive >= min_workers,
        f"{alive} alive, {registered - alive} lost (silent for "
        f"{defaults.WORKER_LOST_AFTER_BEATS} heartbeat intervals); at least {min_workers} "
        "required",
        data={"alive": alive, "lost": registered - alive}))

    now = run("SELECT now()")[0][0]
    heads = run(stats_sql.OLDEST_READY_BY_QUEUE, {"now": now})
    ages = {q: (now - at).total_seconds() for q, at in heads if at is not None}
    oldest_queue = max(ages, key=lambda q: ages[q]) if ages else None
    oldest = ages[oldest_queue] if oldest_queue else None
    findings.append(Finding(
        "backlog", oldest is None or oldest <= max_age,
        "no ready job waiting" if oldest is None else
        f"oldest ready job waits {format_age(oldest)} (queue {oldest_queue}); "
        f"limit {format_age(max_age)}",
        data={"oldest_ready_age_s": oldest, "queue": oldest_queue,
              "by_queue": {q: round(a, 3) for q, a in ages.items()}}))

    # Jobs of tasks no live worker registers are parked, out of the backlog above (a
    # typo'd task name must not fail the check of a healthy worker for ever): named here.
    for task, count, oldest_at in run(registry_sql.WAITING_FOR_A_WORKER, {
            "lost_beats": defaults.WORKER_LOST_AFTER_BEATS,
            "lost_min": defaults.WORKER_LOST_AFTER_MIN}):
        findings.append(Finding(
            "unknown task", False,
            f"{count:,} jobs of task {task!r} wait: no live worker registers it (oldest "
            f"due {format_age(max(0.0, (now - oldest_at).total_seconds()))} ago)",
            failing=False, data={"task": task, "jobs": count}))

    tables = run(stats_sql.TABLE_HEALTH, {"schema": schema})
    parts = []
    table_data = {}
    for name, live, dead, since_vacuum in tables:
        share = dead / (live + dead) if live + dead else 0.0
        parts.append(f"{name} {dead:,} dead / {live:,} live ({share:.0%}), vacuumed "
                     + (f"{format_age(since_vacuum)} ago" if since_vacuum is not None
                        else "never"))
        table_data[name] = {"live": live, "dead": dead, "seconds_since_vacuum": since_vacuum}
    findings.append(Finding("dead tuples", True, "; ".join(parts) or "no statistics yet",
                            failing=False, data={"tables": table_data}))

    holders = run(stats_sql.OLDEST_XACT)
    if holders:
        # The holder's SQL text is left out: it is another session's, often with values
        # in it, and ``check`` output goes to monitoring systems and chat channels.
        kind, name, role, state, seconds, xmin_age, _query = holders[0]
        text = (f"{kind} {name}" + (f" ({role}, {state})" if role or state else "")
                + (f" open for {format_age(seconds)}" if seconds is not None else "")
                + (f", xmin age {xmin_age:,} transactions" if xmin_age is not None else ""))
        too_old = max_xact_age is not None and seconds is not None and seconds > max_xact_age
        findings.append(Finding(
            "xmin horizon", not too_old, "oldest open transaction: " + text,
            failing=max_xact_age is not None,
            data={"holder": kind, "name": name, "seconds": seconds, "xmin_age": xmin_age}))
    else:
        findings.append(Finding("xmin horizon", True, "no open transaction holds it back",
                                failing=max_xact_age is not None))
    return Report(findings)
