"""Cron schedules: exactly one job per tick whatever the number of workers, kills and
restarts; missed ticks; DST; ``pgtaskq schedules``; bad input.

Worker tests run real ``pgtaskq worker`` processes on tests/apps/cron_app.py, whose
``every_second`` schedule makes a tick a second. The in-process tests drive
``CronScheduler`` with a clock the test sets, on the same real database.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from worker_helpers import FAST

from pgtaskq import ConfigurationError, TaskQueue
from pgtaskq.cli import cli
from pgtaskq.cron import latest_tick, next_tick
from pgtaskq.testing import wait_until
from pgtaskq.worker.scheduler import CronScheduler

APP = "apps.cron_app:tq"
ENQUEUED = re.compile(r"schedule (\S+): job (\d+) enqueued for tick (\S+)")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def now() -> datetime:
    return datetime.now(timezone.utc)


def scheduled_jobs(db, schema, name="every_second"):
    """(tick, job id, created_at) of every job of a schedule, live or finished, by tick."""
    return db.execute(
        f'SELECT run_at, id, created_at FROM "{schema}".jobs WHERE schedule = %(n)s '
        f'UNION ALL SELECT run_at, id, created_at FROM "{schema}".job_history '
        "WHERE schedule = %(n)s ORDER BY 1, 2", {"n": name}).fetchall()


def ticks_after(db, schema, moment):
    return [row for row in scheduled_jobs(db, schema) if row[0] > moment]


def assert_one_job_per_tick(rows):
    """No tick twice, and no tick missing between the first and the last."""
    ticks = [row[0] for row in rows]
    assert len(ticks) == len(set(ticks)), f"a tick was enqueued twice: {ticks}"
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(ticks)]
    assert all(gap == 1.0 for gap in gaps), f"ticks missing: {ticks}"


def fired(worker):
    """{job id: tick} of the jobs this worker's log says it enqueued."""
    return {int(m[2]): m[3] for m in ENQUEUED.finditer(worker.output())
            if m[1] == "every_second"}


def start_registered(worker_process, count, *args):
    workers = [worker_process(APP, *args, *FAST) for _ in range(count)]
    for worker in workers:
        worker.wait_ready()
    wait_until(lambda: all("schedules registered" in w.output() for w in workers), 10,
               what="schedules registered by every worker")
    return workers


# -- real workers ----------------------------------------------------------------------


def test_three_workers_enqueue_exactly_one_job_per_tick(tq, db, worker_process):
    workers = start_registered(worker_process, 3, "-q", "default")
    all_running = now()
    wait_until(lambda: len(ticks_after(db, tq.schema, all_running)) >= 5, 15,
               what="5 ticks with three workers")
    for worker in workers:
        assert worker.stop() == 0
    rows = scheduled_jobs(db, tq.schema)
    assert_one_job_per_tick(rows)
    # Each job was enqueued by exactly one worker, and the logs agree with the table.
    logged = [fired(w) for w in workers]
    assert sorted(j for log in logged for j in log) == sorted(row[1] for row in rows)
    # An idle worker wakes for the tick itself: the job exists well within a second.
    late = [(created - tick).total_seconds() for tick, _, created in rows]
    assert max(late) < 1.0, late
    assert min(late) >= 0.0, late


def test_worker_killed_just_after_a_tick_no_duplicate_no_gap(tq, db, worker_process):
    workers = start_registered(worker_process, 3, "-q", "default")
    before = [len(fired(w)) for w in workers]
    victim = wait_until(
        lambda: next((w for w, n in zip(workers, before, strict=True)
                      if len(fired(w)) > n), None), 10, interval=0.002,
        what="a worker enqueuing a tick")
    victim.kill()
    killed_at = now()
    victims_ticks = fired(victim)
    survivors = [w for w in workers if w is not victim]
    wait_until(lambda: len(ticks_after(db, tq.schema, killed_at)) >= 3, 15,
               what="3 ticks after the kill")
    for worker in survivors:
        assert worker.stop() == 0
    rows = scheduled_jobs(db, tq.schema)
    assert_one_job_per_tick(rows)
    ids = {row[1] for row in rows}
    assert set(victims_ticks) <= ids  # what the victim committed is there, once
    assert rows[-1][0] - rows[0][0] >= timedelta(seconds=3)


def test_restart_after_missed_ticks_runs_latest_once_or_skips(tq, db, worker_process):
    first = start_registered(worker_process, 1, "-q", "default")[0]
    wait_until(lambda: len(scheduled_jobs(db, tq.schema)) >= 1, 10, what="a first tick")
    assert first.stop() == 0
    last_tick = db.execute(f'SELECT last_tick FROM "{tq.schema}".schedules '
                           "WHERE name = 'every_second'").fetchone()[0]
    # While no worker runs: three per-second ticks pass, and the monthly schedules are
    # made to look as if they last ran three months ago, defined long before.
    db.execute(f'UPDATE "{tq.schema}".schedules SET last_tick = %s, defined_at = %s '
               "WHERE name LIKE 'monthly%%'",
               (now() - timedelta(days=92), now() - timedelta(days=365)))
    wait_until(lambda: now() >= last_tick + timedelta(seconds=3.2), 5, what="missed ticks")
    expected_catch_up = latest_tick("0 0 1 * *", "UTC", now())

    second = start_registered(worker_process, 1, "-q", "default")[0]
    caught_up = wait_until(lambda: scheduled_jobs(db, tq.schema, "monthly_run_once"), 10,
                           what="the catch-up of the monthly run_once schedule")
    wait_until(lambda: tq.get_job(caught_up[0][1]).status == "succeeded", 10,
               what="the catch-up job to run")
    wait_until(lambda: len(ticks_after(db, tq.schema, last_tick)) >= 2, 10)
    assert second.stop() == 0

    assert [row[0] for row in caught_up] == [expected_catch_up]  # the latest, once
    assert scheduled_jobs(db, tq.schema, "monthly_skip") == []
    skip_row = db.execute(f'SELECT next_tick FROM "{tq.schema}".schedules '
                          "WHERE name = 'monthly_skip'").fetchone()
    assert skip_row[0] == next_tick("0 0 1 * *", "UTC", expected_catch_up)
    # every_second: no burst for the ticks missed while no worker ran.
    after = ticks_after(db, tq.schema, last_tick)
    assert after[0][0] >= last_tick + timedelta(seconds=3), after
    assert_one_job_per_tick(after)


# -- in-process scheduler with a test clock --------------------------------------------


class Clock:
    """A clock the test moves; starts half-way between two seconds."""

    def __init__(self) -> None:
        self.t = int(time.time()) + 0.5

    def __call__(self) -> float:
        return self.t


def app(tq: TaskQueue, **expressions: str) -> TaskQueue:
    """A TaskQueue on the test's schema with one schedule per name=expression."""
    queue = TaskQueue(tq.dsn, schema=tq.schema)
    for name, expression in expressions.items():
        queue.periodic(expression, name=name)(lambda: None)
    return queue


def scheduler(tq, app_queue, clock) -> CronScheduler:
    return CronScheduler(tq.pool, tq.schema, tq.channel, app_queue.schedules, clock=clock)


def schedule_row(db, schema, name):
    return db.execute(f'SELECT active, expression, last_tick, last_job_id FROM "{schema}"'
                      ".schedules WHERE name = %s", (name,)).fetchone()


def job_count(db, schema, name):
    return len(scheduled_jobs(db, schema, name))


def test_two_schedulers_on_one_tick_enqueue_once(tq, db):
    clock = Clock()
    a, b = (scheduler(tq, app(tq, s="* * * * * *"), clock) for _ in range(2))
    for s in (a, b):
        s.run_due()
    for _ in range(3):
        clock.t += 1
        assert a.seconds_until_due() <= 0 and b.seconds_until_due() <= 0
        a.run_due()
        b.run_due()
    assert job_count(db, tq.schema, "s") == 3
    assert schedule_row(db, tq.schema, "s")[2].timestamp() == int(clock.t)


def test_a_worker_that_fell_behind_runs_only_the_latest_tick(tq, db):
    clock = Clock()
    s = scheduler(tq, app(tq, s="* * * * * *"), clock)
    s.run_due()
    clock.t += 1
    s.run_due()
    clock.t += 30.2  # thirty ticks pass while the worker is held up
    s.run_due()
    assert job_count(db, tq.schema, "s") == 2
    assert schedule_row(db, tq.schema, "s")[2].timestamp() == int(clock.t)
    assert s.seconds_until_due() == pytest.approx(0.3)


def test_changed_expression_takes_effect_at_next_start_without_catch_up(tq, db, caplog):
    clock = Clock()
    old = scheduler(tq, app(tq, s="* * * * * *"), clock)
    old.run_due()
    clock.t += 1
    old.run_due()
    assert job_count(db, tq.schema, "s") == 1
    clock.t += 3 * 60
    new = scheduler(tq, app(tq, s="*/10 * * * *"), clock)  # a worker with new code starts
    new.run_due()
    assert schedule_row(db, tq.schema, "s")[1] == "*/10 * * * *"
    # Ticks of the new expression before it was registered were never "missed".
    assert new.due["s"].timestamp() > clock.t
    assert job_count(db, tq.schema, "s") == 1
    # A worker still running the old code goes on with its own definition (a rolling
    # deploy), still exactly once per tick, and says why in its log.
    old.run_due()
    assert job_count(db, tq.schema, "s") == 2
    assert "redefined by a worker started after this one" in caplog.text
    clock.t = new.due["s"].timestamp()  # the old worker is gone; the new one fires
    new.run_due()
    assert job_count(db, tq.schema, "s") == 3
    assert schedule_row(db, tq.schema, "s")[2].timestamp() == clock.t


def test_schedule_removed_from_code_stops_and_shows_inactive(tq, db, pgtaskq_dsn):
    clock = Clock()
    old = scheduler(tq, app(tq, keep="* * * * * *", gone="* * * * * *"), clock)
    old.run_due()
    clock.t += 1
    old.run_due()
    new = scheduler(tq, app(tq, keep="* * * * * *"), clock)  # the deploy: new code starts
    new.run_due()
    for _ in range(2):  # old workers have stopped
        clock.t += 1
        new.run_due()
    assert schedule_row(db, tq.schema, "gone")[0] is False
    assert job_count(db, tq.schema, "gone") == 1
    assert job_count(db, tq.schema, "keep") == 3
    result = CliRunner().invoke(cli, ["--dsn", pgtaskq_dsn, "--schema", tq.schema,
                                      "schedules"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    gone = next(line for line in lines if line.startswith("gone"))
    assert gone.split()[-1] == "no"
    # active, but nothing fires it: this test runs no worker
    assert next(line for line in lines if line.startswith("keep")).split()[-5:] == [
        "yes", "no:", "no", "live", "worker"]


def test_run_once_and_skip_at_start_in_process(tq, db):
    clock = Clock()
    both = {"once": "0 * * * *", "skipping": "0 * * * *"}
    queue = TaskQueue(tq.dsn, schema=tq.schema)
    queue.periodic(both["once"], name="once")(lambda: None)
    queue.periodic(both["skipping"], name="skipping", misfire="skip")(lambda: None)
    scheduler(tq, queue, clock).run_due()  # registered; nothing missed yet
    assert job_count(db, tq.schema, "once") == job_count(db, tq.schema, "skipping") == 0
    clock.t += 3 * 3600  # three hourly ticks pass with no worker
    restarted = scheduler(tq, queue, clock)
    restarted.run_due()
    rows = scheduled_jobs(db, tq.schema, "once")
    assert len(rows) == 1
    assert schedule_row(db, tq.schema, "once")[2] == latest_tick(
        "0 * * * *", "UTC", datetime.fromtimestamp(clock.t, timezone.utc))
    assert job_count(db, tq.schema, "skipping") == 0
    assert restarted.due["skipping"].timestamp() > clock.t


def test_database_errors_back_off_and_never_reach_the_main_loop(tq, caplog):
    clock = Clock()
    broken = CronScheduler(tq.pool, "not_installed_here", tq.channel,
                           app(tq, s="* * * * * *").schedules, clock=clock)
    broken.run_due()  # the schema is missing: logged, not raised
    assert "cron scheduler:" in caplog.text
    assert broken.seconds_until_due() == pytest.approx(0.5)
    clock.t += 0.5
    broken.run_due()
    assert broken.seconds_until_due() == pytest.approx(1.0)  # doubles, up to a cap


# -- pgtaskq schedules -------------------------------------------------------------------


def test_schedules_command_lists_last_and_next_run(tq, db, pgtaskq_dsn):
    clock = Clock()
    queue = TaskQueue(tq.dsn, schema=tq.schema)
    queue.periodic("* * * * * *", name="tick")(lambda: None)
    queue.periodic("30 2 * * *", name="nightly", tz="Europe/Berlin")(lambda: None)
    s = scheduler(tq, queue, clock)
    s.run_due()
    clock.t += 1
    s.run_due()
    job_id = schedule_row(db, tq.schema, "tick")[3]
    runner = CliRunner()
    base = ["--dsn", pgtaskq_dsn, "--schema", tq.schema]
    result = runner.invoke(cli, [*base, "schedules"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["name", "expression", "tz"]
    for header in ("next run (UTC)", "last run (UTC)", "last job", "active", "fires"):
        assert header in lines[0]
    tick = next(line for line in lines if line.startswith("tick"))
    last = datetime.fromtimestamp(clock.t, timezone.utc)
    assert last.strftime("%Y-%m-%d %H:%M:%S") in tick
    assert (last + timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S") in tick
    assert f"{job_id} queued" in tick and tick.split()[-5:] == [
        "yes", "no:", "no", "live", "worker"]
    nightly = next(line for line in lines if line.startswith("nightly"))
    assert "Europe/Berlin" in nightly and "30 2 * * *" in nightly
    as_json = runner.invoke(cli, [*base, "schedules", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert '"last_job_status": "queued"' in as_json.output


def test_schedules_command_says_whether_a_live_worker_fires_them(tq, pgtaskq_dsn,
                                                                  worker_process):
    base = ["--dsn", pgtaskq_dsn, "--schema", tq.schema, "schedules"]
    worker = worker_process(APP, "-q", "default", *FAST)
    worker.wait_ready()
    # "ready" comes after the schedules are registered: the command shows them at once
    log = worker.output()
    assert -1 < log.find("schedules registered") < log.find(" ready: "), log
    served = CliRunner().invoke(cli, [*base, "--json"])
    rows = {row["name"]: row for row in map(json.loads, served.output.splitlines())}
    assert {name: (row["fires"], row["live_workers"]) for name, row in rows.items()} == {
        name: ("yes", 1) for name in ("every_second", "monthly_run_once", "monthly_skip")}
    assert worker.stop() == 0

    result = CliRunner().invoke(cli, base)
    assert result.exit_code == 0, result.output
    every_second = next(line for line in result.output.splitlines()
                        if line.startswith("every_second"))
    assert every_second.split()[-5:] == ["yes", "no:", "no", "live", "worker"]
    assert "no live worker: no schedule fires until a worker starts" in result.output
    stopped = CliRunner().invoke(cli, [*base, "--json"])
    assert {json.loads(line)["fires"] for line in stopped.output.splitlines()} == {
        "no: no live worker"}


def test_schedules_command_with_none_registered(tq, pgtaskq_dsn):
    result = CliRunner().invoke(cli, ["--dsn", pgtaskq_dsn, "--schema", tq.schema,
                                      "schedules"])
    assert result.exit_code == 0
    assert "no schedules registered" in result.output


# -- tick arithmetic and bad input (no database) ---------------------------------------


def test_dst_next_ticks_follow_croniter_in_the_schedule_zone():
    berlin = "Europe/Berlin"
    # Spring forward, 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist that day,
    # the daily tick fires at 03:00 CEST (01:00 UTC); the usual 00:30 UTC after.
    daily = [utc(2026, 3, 27, 12)]
    for _ in range(3):
        daily.append(next_tick("30 2 * * *", berlin, daily[-1]))
    assert daily[1:] == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0),
                         utc(2026, 3, 30, 0, 30)]
    # An hourly schedule has no 02:00 that night.
    assert next_tick("0 * * * *", berlin, utc(2026, 3, 29, 0, 0)) == utc(2026, 3, 29, 1, 0)
    # Fall back, 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice, and fires twice.
    daily = [utc(2026, 10, 23, 12)]
    for _ in range(3):
        daily.append(next_tick("30 2 * * *", berlin, daily[-1]))
    assert daily[1:] == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30),
                         utc(2026, 10, 25, 1, 30)]
    # The same ticks in UTC never see a transition.
    assert next_tick("30 2 * * *", "UTC", utc(2026, 10, 25, 2, 30)) == utc(2026, 10, 26, 2, 30)
    # latest_tick is inclusive, and the inverse of next_tick across the transition.
    assert latest_tick("30 2 * * *", berlin, utc(2026, 10, 25, 1, 30)) == \
        utc(2026, 10, 25, 1, 30)
    assert latest_tick("30 2 * * *", berlin, utc(2026, 10, 25, 1, 29)) == \
        utc(2026, 10, 25, 0, 30)


def test_seconds_field_is_the_sixth():
    start = utc(2026, 1, 1, 0, 0, 0)
    assert next_tick("* * * * * */10", "UTC", start) == utc(2026, 1, 1, 0, 0, 10)
    assert next_tick("* * * * * 15", "UTC", start) == utc(2026, 1, 1, 0, 0, 15)
    assert next_tick("* * * * *", "UTC", start) == utc(2026, 1, 1, 0, 1, 0)


@pytest.mark.parametrize("expression, tz, message", [
    ("every day", None, "'every day'"),
    ("61 * * * *", None, "'61 * * * *'"),
    ("0 0 30 2 *", None, "never matches"),
    ("* * * *", None, "'* * * *'"),
    ("*/5 * * * *", "Mars/Olympus", "unknown time zone 'Mars/Olympus' for schedule "
                                    "'*/5 * * * *'"),
])
def test_bad_expression_or_zone_fails_at_decoration_naming_the_expression(
        expression, tz, message):
    queue = TaskQueue("postgresql://nowhere/x", schema="unused")
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        queue.periodic(expression, tz=tz)
    assert queue.schedules == {} and queue.tasks == {}


def test_bad_options_and_duplicate_names():
    queue = TaskQueue("postgresql://nowhere/x", schema="unused")
    with pytest.raises(ConfigurationError, match="misfire"):
        queue.periodic("* * * * *", misfire="later")
    with pytest.raises(TypeError, match="JSON-serialisable"):
        queue.periodic("* * * * *", args=[object()])

    @queue.periodic("*/5 * * * *", name="cleanup")
    def cleanup():
        return "done"

    assert cleanup() == "done" and queue.tasks["cleanup"] is cleanup  # a plain task too
    with pytest.raises(ConfigurationError, match="two schedules are named 'cleanup'"):
        queue.periodic("0 * * * *", name="cleanup")(lambda: None)
    # A second schedule for the same task needs its own name, and reuses the task.
    hourly = queue.periodic("0 * * * *", name="cleanup-hourly", args=[1])(cleanup)
    assert hourly is cleanup
    assert queue.schedules["cleanup-hourly"].task == "cleanup"
