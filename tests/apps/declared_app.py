"""A worker app whose task declares its options; producers in the tests do not import it."""

from __future__ import annotations

from pgtaskq import TaskQueue, current_job

tq = TaskQueue()


@tq.task(name="reports.build", queue="reports", priority=5, max_attempts=2, timeout=30)
def build_report(report_id):
    return {"report": report_id, "queue": current_job().queue}
