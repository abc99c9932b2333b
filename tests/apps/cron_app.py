"""Schedules for the cron tests: one that ticks every second (6-field expression), so a
test sees several ticks in a few seconds, and two monthly ones that differ only in their
misfire policy, for the missed-tick tests (their ticks are weeks apart, so a test can
only ever see the catch-up of a missed one).

``every_second`` enqueues into its own queue: tests that count ticks run workers with
``-q default``, so those jobs stay queued with ``run_at`` = their tick (running, and
above all rescuing, a job moves its ``run_at``)."""

from __future__ import annotations

from pgtaskq import TaskQueue

tq = TaskQueue()


@tq.periodic("* * * * * *", name="every_second", queue="ticks")
def every_second():
    return "tick"


@tq.periodic("0 0 1 * *", name="monthly_run_once")
def monthly_run_once():
    return "caught up"


@tq.periodic("0 0 1 * *", name="monthly_skip", misfire="skip")
def monthly_skip():
    return "skipped?"
