"""Read-only admin pages of live and finished jobs, with retry and cancel as actions.

Nothing is added, edited or deleted through the ORM: the actions call the queue's own
``cancel`` and ``retry``, the statements workers and the CLI use. Filters are on columns
with few values (status, queue, task); lists never show a full count (a million-row
``count(*)`` on every page), and search is by exact id or task name.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from pgtaskq.contrib.django.models import FinishedJob, Job
from pgtaskq.errors import PgtaskqError

ACTION_LIMIT = 1000
"""Jobs one action handles at most (the admin's "select all" can mean millions)."""


class ReadOnlyJobAdmin(admin.ModelAdmin):
    search_fields = ("=id", "=task")
    show_full_result_count = False
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="attempts")
    def attempts_of(self, job: Any) -> str:
        return f"{job.attempts}/{job.max_attempts}"

    @admin.display(description="error")
    def error_line(self, job: Any) -> str:
        from pgtaskq.operations.stats import error_summary

        line = error_summary(job.last_error)
        return line if len(line) <= 80 else line[:79] + "…"

    def _each(self, request: HttpRequest, queryset: QuerySet, verb: str) -> None:
        from pgtaskq.contrib.django.conf import get_queue

        tq = get_queue()
        act = tq.retry if verb == "retry" else tq.cancel
        done = refused = 0
        for job_id in queryset.values_list("id", flat=True)[:ACTION_LIMIT]:
            try:
                ok = act(job_id)
            except PgtaskqError:  # retry refused: its dedupe key is held again
                ok = False
            done, refused = done + ok, refused + (not ok)
        past = "queued again" if verb == "retry" else "cancelled (running ones asked to stop)"
        self.message_user(request, f"{done} job(s) {past}.", messages.SUCCESS)
        if refused:
            self.message_user(request, f"{refused} job(s) could not be {verb}ed (see their "
                              "status).", messages.WARNING)


@admin.register(Job)
class JobAdmin(ReadOnlyJobAdmin):
    list_display = ("id", "task", "queue", "status", "priority", "attempts_of", "run_at",
                    "worker_id", "cancel_requested")
    list_filter = ("status", "queue", "task")
    actions = ("cancel_jobs",)

    @admin.action(description="Cancel selected jobs", permissions=("view",))
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, "cancel")


@admin.register(FinishedJob)
class FinishedJobAdmin(ReadOnlyJobAdmin):
    list_display = ("id", "task", "queue", "status", "attempts_of", "finished_at",
                    "error_line")
    list_filter = ("status", "queue", "task", "finished_at")
    actions = ("retry_jobs",)

    @admin.action(description="Retry selected failed or cancelled jobs",
                  permissions=("view",))
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, "retry")
