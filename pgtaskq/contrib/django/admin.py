"""Read-only admin pages of live and finished jobs, with retry and cancel as actions.

Nothing is added, edited or deleted through the ORM: the actions call the queue's own
``cancel`` and ``retry``, the statements workers and the CLI use. Search is by exact id or
task name.

A page's cost must not grow with the tables (millions of queued jobs, days of history):

- the filters' choices never come from ``SELECT DISTINCT`` over the table (Django's default
  for a field, a sequential scan of every job on every page). Statuses are a fixed set;
  task and queue names come from index probes and the registries
  (:mod:`pgtaskq.sql.admin`), plus the tasks this project registers;
- lists count at most ``COUNT_LIMIT + 1`` rows (Django counts the whole filtered table for
  its paginator); past that the page says "more than 10,000" and pages up to there;
- no facet counts (Django 5's "show counts": one count per choice, over the whole table).

Filtering by a task of ``job_history`` walks ``job_history_task``; other filters walk the
primary key from the newest job and stop at 50 rows, so a value with few jobs (a task on
``jobs``, which has no index on ``task``) still reads until it has found them.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connections, router
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

from pgtaskq.contrib.django.models import FinishedJob, Job, schema_of
from pgtaskq.errors import PgtaskqError
from pgtaskq.sql import admin as statements
from pgtaskq.sql import render

ACTION_LIMIT = 1000
"""Jobs one action handles at most (the admin's "select all" can mean millions)."""

CHOICES_LIMIT = 1000
"""Task or queue names one filter offers at most."""

COUNT_LIMIT = 10_000
"""Rows a list counts at most (200 pages of 50)."""


class MoreThan(int):
    """A count that stopped past its limit: pages are counted up to it, the page says
    "more than 10,000 live jobs"."""

    def __str__(self) -> str:
        return f"more than {int(self) - 1:,}"


class CappedCountPaginator(Paginator):
    """Counts at most ``COUNT_LIMIT + 1`` rows: ``SELECT count(*) FROM (... LIMIT n)``."""

    @cached_property
    def count(self) -> int:
        # unordered: the first rows that match, in whatever order the plan reads them
        counted = self.object_list.order_by()[: COUNT_LIMIT + 1].count()
        return MoreThan(counted) if counted > COUNT_LIMIT else counted


class StatusFilter(admin.SimpleListFilter):
    """The statuses of one table: a fixed set, so no query."""

    title = "status"
    parameter_name = "status"
    statuses: tuple[str, ...] = ()

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(status, status) for status in self.statuses]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(status=self.value()) if self.value() else queryset


class LiveStatusFilter(StatusFilter):
    statuses = ("queued", "running")


class FinishedStatusFilter(StatusFilter):
    statuses = ("succeeded", "failed", "cancelled")


class NameFilter(admin.SimpleListFilter):
    """Task or queue names read by one statement of :mod:`pgtaskq.sql.admin`, with the
    names of the tasks this project registers and the value chosen now."""

    statement = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        model = model_admin.model
        query = render(schema_of(model), self.statement)
        with connections[router.db_for_read(model)].cursor() as cur:
            cur.execute(query, {"limit": CHOICES_LIMIT})
            names = {row[0] for row in cur.fetchall()}
        names |= self.registered()
        if self.value():
            names.add(self.value())
        return [(name, name) for name in sorted(names)[:CHOICES_LIMIT]]

    def registered(self) -> set[str]:
        from pgtaskq.contrib.django.conf import get_queue

        try:
            tasks = get_queue().tasks.values()
        except PgtaskqError:  # bad settings: the system check says so, the page still works
            return set()
        if self.parameter_name == "queue":
            return {task.queue for task in tasks}
        return {task.name for task in tasks}

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if not self.value():
            return queryset
        return queryset.filter(**{self.parameter_name: self.value()})


class LiveTaskFilter(NameFilter):
    title = parameter_name = "task"
    statement = statements.ADMIN_JOB_TASKS


class LiveQueueFilter(NameFilter):
    title = parameter_name = "queue"
    statement = statements.ADMIN_JOB_QUEUES


class FinishedTaskFilter(NameFilter):
    title = parameter_name = "task"
    statement = statements.ADMIN_HISTORY_TASKS

    def registered(self) -> set[str]:
        return set()  # a task with no finished job would only list nothing


class FinishedQueueFilter(NameFilter):
    title = parameter_name = "queue"
    statement = statements.ADMIN_HISTORY_QUEUES


class ReadOnlyJobAdmin(admin.ModelAdmin):
    search_fields = ("=id", "=task")
    show_full_result_count = False
    list_per_page = 50
    paginator = CappedCountPaginator
    if hasattr(admin, "ShowFacets"):  # Django >= 5.0: a count per choice over the table
        show_facets = admin.ShowFacets.NEVER

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
    list_filter = (LiveStatusFilter, LiveQueueFilter, LiveTaskFilter)
    actions = ("cancel_jobs",)

    @admin.action(description="Cancel selected jobs", permissions=("view",))
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, "cancel")


@admin.register(FinishedJob)
class FinishedJobAdmin(ReadOnlyJobAdmin):
    list_display = ("id", "task", "queue", "status", "attempts_of", "finished_at",
                    "error_line")
    list_filter = (FinishedStatusFilter, FinishedQueueFilter, FinishedTaskFilter,
                   "finished_at")
    actions = ("retry_jobs",)

    @admin.action(description="Retry selected failed or cancelled jobs",
                  permissions=("view",))
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, "retry")
