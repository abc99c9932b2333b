"""The TaskQueue's management API: the schema (install, upgrade, grants) and the jobs
(get, list, cancel, retry, run now) and queues (pause, resume) already in the database.

Each call is one statement, on the caller's connection (``conn=``) or the queue's own pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pgtaskq import dbapi, migrate, options
from pgtaskq.connections import QueueConnections
from pgtaskq.errors import ConfigurationError, PgtaskqError
from pgtaskq.job import Job
from pgtaskq.sql import dashboard as dashboard_sql
from pgtaskq.sql import jobs as job_sql
from pgtaskq.sql import queues as queue_sql


class QueueManagement(QueueConnections):
    """Schema administration and job management of ``TaskQueue``."""

    channel: str

    # -- schema -------------------------------------------------------------------------

    def install(self) -> tuple[int, int]:
        """Create or upgrade the schema (idempotent); return (version before, after)."""
        return self.upgrade()

    def upgrade(self) -> tuple[int, int]:
        """Apply pending migrations under an advisory lock; return (before, after)."""
        with self.connect() as conn:
            return migrate.upgrade(conn, self.schema)

    def uninstall(self) -> bool:
        """Drop pgtaskq's tables (jobs included!); return whether it was installed."""
        with self.connect() as conn:
            return migrate.uninstall(conn, self.schema)

    def grant(
        self,
        *,
        producer: str | Sequence[str] = (),
        worker: str | Sequence[str] = (),
        reader: str | Sequence[str] = (),
        dry_run: bool = False,
    ) -> list[str]:
        """Grant each role what its kind needs (``pgtaskq.grants``); return the statements.

        Run as the schema's owner. ``dry_run`` only returns the statements.
        """
        from pgtaskq import grants

        roles = {kind: [names] if isinstance(names, str) else list(names)
                 for kind, names in (("producer", producer), ("worker", worker),
                                     ("reader", reader))}
        with self.connect() as conn:
            migrate.require_installed(conn, self.schema)
            return grants.grant(conn, self.schema, roles, dry_run=dry_run)

    def check_privileges(self, kind: str) -> None:
        """Raise ``PgtaskqError`` naming the first privilege of ``kind`` this role lacks."""
        from pgtaskq import grants

        with self.connect() as conn:
            grants.require_privileges(conn, self.schema, kind)

    def check_installed(self) -> int:
        """Installed version; ``SchemaNotInstalledError`` saying what to run otherwise."""
        with self.connect() as conn:
            return migrate.require_installed(conn, self.schema, self.admin_command)

    # -- inspect and manage -------------------------------------------------------------

    def get_job(self, job_id: int) -> Job | None:
        """The job with this id, live or finished; ``None`` if there is none."""
        rows = self._run(job_sql.GET, {"id": int(job_id)})
        return Job.from_row(rows[0]) if rows else None

    def list_jobs(
        self,
        *,
        status: str | None = None,
        task: str | None = None,
        queue: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Newest jobs first, filtered by status, task and queue."""
        from pgtaskq.job import FINAL_STATUSES, LIVE_STATUSES, STATUSES

        if status is not None and status not in STATUSES:
            raise ConfigurationError(
                f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        params = {"status": status, "task": task, "queue": queue, "limit": int(limit)}
        rows: list[tuple] = []
        if status is None or status in LIVE_STATUSES:
            rows += self._run(job_sql.LIST_LIVE, params)
        if status is None or status in FINAL_STATUSES:
            rows += self._run(job_sql.LIST_HISTORY, params)
        rows.sort(key=lambda row: row[0], reverse=True)
        return [Job.from_row(row) for row in rows[: int(limit)]]

    def cancel(self, job_id: int, *, conn: Any = None) -> bool:
        """Cancel a job: a queued one at once; a running one is asked to stop.

        Returns False when the job does not exist or has already finished.
        """
        rows = self._run(job_sql.CANCEL, {"id": int(job_id), "channel": self.channel}, conn)
        return bool(rows)

    def retry(self, job_id: int, *, conn: Any = None) -> bool:
        """Queue a failed or cancelled job again, with a fresh count of attempts."""
        try:
            rows = self._run(job_sql.RETRY, {"id": int(job_id), "channel": self.channel}, conn)
        except Exception as exc:  # from any driver: psycopg 3, psycopg2, Django
            if dbapi.sqlstate(exc) != dbapi.UNIQUE_VIOLATION:
                raise
            raise PgtaskqError(
                f"cannot retry job {job_id}: another job with its dedupe_key is queued or "
                "running"
            ) from exc
        return bool(rows)

    def run_now(self, job_id: int, *, conn: Any = None) -> bool:
        """Make a queued job that waits for its ``run_at`` runnable at once.

        Returns False when the job is not queued or is already due.
        """
        rows = self._run(dashboard_sql.RUN_NOW, {"id": int(job_id), "channel": self.channel},
                         conn)
        return bool(rows)

    def retry_failed(self, task: str, *, limit: int = 10_000, conn: Any = None) -> int:
        """Queue the failed jobs of ``task`` again (at most ``limit``); return how many.

        Of failed jobs sharing a dedupe key only the newest is queued, and none whose key
        a live job holds.
        """
        rows = self._run(dashboard_sql.RETRY_FAILED_OF_TASK,
                         {"task": options.check_task_name(task), "limit": int(limit),
                          "channel": self.channel}, conn)
        return int(rows[0][0]) if rows else 0

    # -- pause and resume queues --------------------------------------------------------

    def pause(self, queue: str, *, conn: Any = None) -> bool:
        """Stop every worker claiming jobs of ``queue`` (from each one's next claim on).

        Jobs already running finish; new jobs may still be enqueued and wait. Returns
        False when the queue was already paused. The queue need not exist yet.
        """
        rows = self._run(queue_sql.PAUSE, {"queue": options.check_queue(queue)}, conn)
        return bool(rows)

    def resume(self, queue: str, *, conn: Any = None) -> bool:
        """Let workers claim ``queue`` again (idle ones are woken at once).

        Returns False when the queue was not paused.
        """
        rows = self._run(queue_sql.RESUME, {"queue": options.check_queue(queue),
                                            "channel": self.channel}, conn)
        return bool(rows)

    def paused_queues(self) -> dict[str, datetime]:
        """The paused queues, by name, with the time each was paused."""
        return {queue: at for queue, at in self._run(queue_sql.LIST_PAUSED, {})}
