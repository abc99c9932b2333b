"""History retention (the workers' pruner, ``pgtaskq purge``) and ``pgtaskq check``."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from click.testing import CliRunner
from worker_helpers import FAST

from pgtaskq.cli import cli
from pgtaskq.operations import stats
from pgtaskq.testing import wait_until
from pgtaskq.worker import pruner

APP = "apps.basic:tq"

# (status, hours since it finished): around the defaults of 1 day and 7 days.
HISTORY = [("succeeded", 1), ("succeeded", 23), ("succeeded", 25), ("succeeded", 200),
           ("failed", 25), ("failed", 160), ("failed", 170), ("cancelled", 100),
           ("cancelled", 169)]


def add_history(db, schema, rows=HISTORY, copies=1):
    """Finished jobs with the given ages; returns {(status, hours): [ids]}."""
    ids: dict[tuple[str, int], list[int]] = {}
    for status, hours in rows:
        ids[(status, hours)] = [r[0] for r in db.execute(
            f'INSERT INTO "{schema}".job_history (id, queue, task, args, kwargs, status, '
            "priority, run_at, attempts, max_attempts, created_at, finished_at) "
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')), 'default', 't', '[]', '{}', "
            "%s, 0, now(), 1, 1, now(), now() - make_interval(hours => %s) "
            "FROM generate_series(1, %s) RETURNING id",
            (f'"{schema}".jobs', status, hours, copies)).fetchall()]
    return ids


def remaining(db, schema):
    return sorted(r[0] for r in db.execute(f'SELECT id FROM "{schema}".job_history'))


def expected_left(ids, keep_succeeded_h, keep_failed_h):
    return sorted(i for (status, hours), group in ids.items() for i in group
                  if hours < (keep_succeeded_h if status == "succeeded" else keep_failed_h))


def test_pruner_deletes_exactly_the_expired_rows_in_batches(tq, db):
    ids = add_history(db, tq.schema, copies=3)
    db.execute(f'INSERT INTO "{tq.schema}".stats_minute (minute, queue, task, succeeded) '
               "SELECT date_trunc('minute', now()) - make_interval(hours => h), 'q', 't', 1 "
               "FROM unnest(ARRAY[0, 1, 47, 49, 72]) AS h")
    worker = pruner.Pruner(tq.pool, tq.schema, batch=2)  # defaults: 1 day, 7 days, 2 days
    deleted = worker.run_once()
    assert deleted == {"succeeded": 6, "failed": 3, "cancelled": 3, "stats": 2,
                       "trace contexts": 0, "folded": 0}
    assert remaining(db, tq.schema) == expected_left(ids, 24, 168)
    hours = sorted(r[0] for r in db.execute(
        f"SELECT extract(epoch FROM date_trunc('minute', now()) - minute) / 3600 "
        f'FROM "{tq.schema}".stats_minute'))
    assert hours == [0, 1, 47]
    assert worker.run_once() == {"succeeded": 0, "failed": 0, "cancelled": 0, "stats": 0,
                                 "trace contexts": 0, "folded": 0}


def test_pruner_folds_old_per_worker_rollups_without_changing_the_figures(tq, db):
    # Both reads must fall in the same minute, or the windows move between them.
    wait_until(lambda: db.execute("SELECT extract(second FROM clock_timestamp()) < 50")
               .fetchone()[0], 15, what="the first 50 s of a minute")
    db.execute(
        f'INSERT INTO "{tq.schema}".stats_minute (minute, queue, task, worker_id, succeeded, '
        "failed, retried, wait_ms_histogram, run_ms_histogram) "
        "SELECT date_trunc('minute', now()) - make_interval(mins => m), 'q', t, w, w, 1, 2, "
        "array_fill(w, ARRAY[64]), array_fill(10 * w, ARRAY[64]) "
        "FROM unnest(ARRAY[1, 14, 30]) m, unnest(ARRAY['a', 'b']) t, generate_series(1, 3) w")
    db.execute(  # a rescuer's row (worker 0, no histograms) for one folded minute
        f'INSERT INTO "{tq.schema}".stats_minute (minute, queue, task, failed) '
        "VALUES (date_trunc('minute', now()) - interval '30 minutes', 'q', 'a', 5)")
    with tq.connect() as conn:
        before = stats.collect(conn, tq.schema).to_json()
    deleted = pruner.Pruner(tq.pool, tq.schema, batch=4).run_once()
    assert deleted["folded"] == 12  # 2 old minutes x 2 tasks x 3 workers
    rows = db.execute(
        f"SELECT extract(epoch FROM date_trunc('minute', now()) - minute)::int / 60, task, "
        f'worker_id, succeeded, failed, retried, wait_ms_histogram[1], run_ms_histogram[64], '
        f'cardinality(wait_ms_histogram) FROM "{tq.schema}".stats_minute '
        "ORDER BY 1, 2, 3").fetchall()
    assert [r for r in rows if r[0] == 1] == [
        (1, t, w, w, 1, 2, w, 10 * w, 64) for t in "ab" for w in (1, 2, 3)]
    assert [r for r in rows if r[0] > 1] == [
        (14, "a", 0, 6, 3, 6, 6, 60, 64), (14, "b", 0, 6, 3, 6, 6, 60, 64),
        (30, "a", 0, 6, 8, 6, 6, 60, 64), (30, "b", 0, 6, 3, 6, 6, 60, 64)]
    with tq.connect() as conn:
        after = stats.collect(conn, tq.schema).to_json()

    def figures(snapshot):  # throughput moves with the clock between the two reads
        rows = [*snapshot["tasks"], *snapshot["queues"], snapshot["total"]]
        return [{k: v for k, v in row.items() if k != "throughput_per_s"} for row in rows]

    assert figures(after) == figures(before)


def test_worker_prunes_with_its_retention_options(tq, db, worker_process):
    ids = add_history(db, tq.schema)
    worker = worker_process(APP, "-c", "1", *FAST, "--keep-succeeded", "2h",
                            "--keep-failed", "4d")
    left = expected_left(ids, 2, 96)
    wait_until(lambda: remaining(db, tq.schema) == left, 15, what="pruned history")
    wait_until(lambda: "pruned expired history" in worker.output(), 10, what="log line")
    assert worker.stop() == 0


def run(dsn, schema, *args):
    return CliRunner().invoke(cli, ["--dsn", dsn, "--schema", schema, *args])


def test_purge_command(tq, db, pgtaskq_dsn):
    ids = add_history(db, tq.schema)
    result = run(pgtaskq_dsn, tq.schema, "purge", "--older-than", "3d", "--status", "failed")
    assert result.exit_code == 0, result.output
    assert "purged 2 finished jobs" in result.output
    assert remaining(db, tq.schema) == sorted(
        i for key, group in ids.items() for i in group
        if not (key[0] == "failed" and key[1] > 72))
    result = run(pgtaskq_dsn, tq.schema, "purge", "--older-than", "1h30m")
    assert result.exit_code == 0 and "purged 6 finished jobs" in result.output
    assert remaining(db, tq.schema) == ids[("succeeded", 1)]


@pytest.mark.parametrize("bad", ["3x", "-1d", "0", "d"])
def test_purge_rejects_bad_durations(tq, pgtaskq_dsn, bad):
    result = run(pgtaskq_dsn, tq.schema, "purge", "--older-than", bad)
    assert result.exit_code == 2 and "duration" in result.output and "Traceback" \
        not in result.output


def check(dsn, schema, *args):
    result = run(dsn, schema, "check", *args)
    assert "Traceback" not in result.output, result.output
    return result


def test_check_exit_codes(tq, db, pgtaskq_dsn, worker_process):
    absent = f"missing_{uuid.uuid4().hex[:8]}"
    missing = check(pgtaskq_dsn, absent)  # could not check: 3, not "unhealthy"
    assert missing.exit_code == 3 and f"pgtaskq --schema {absent} install" in missing.stderr
    assert missing.stderr.startswith("Error: could not check: ")
    missing_json = json.loads(check(pgtaskq_dsn, absent, "--json").stdout)
    assert (missing_json["status"], missing_json["exit_code"]) == ("unknown", 3)

    no_worker = check(pgtaskq_dsn, tq.schema)
    assert no_worker.exit_code == 1
    assert "FAIL  workers: 0 alive" in no_worker.output
    unhealthy = json.loads(check(pgtaskq_dsn, tq.schema, "--json").stdout)
    assert (unhealthy["status"], unhealthy["healthy"], unhealthy["exit_code"]) == \
        ("unhealthy", False, 1)
    statuses = {c["name"]: (c["status"], c["decides_health"]) for c in unhealthy["checks"]}
    assert statuses["workers"] == ("failed", True)
    assert statuses["backlog"] == ("ok", True)
    assert statuses["dead tuples"] == ("info", False)
    assert all("ok" not in c and "failing" not in c for c in unhealthy["checks"])
    assert check(pgtaskq_dsn, tq.schema, "--min-workers", "0").exit_code == 0

    tq.enqueue("nobody.knows.this", queue="slow")  # no worker runs it: it waits
    db.execute(f'UPDATE "{tq.schema}".jobs SET run_at = now() - interval \'10 minutes\'')
    stale = check(pgtaskq_dsn, tq.schema, "--min-workers", "0")
    assert stale.exit_code == 1 and "FAIL  backlog: oldest ready job waits 10m" in stale.output
    assert "queue slow" in stale.output
    assert check(pgtaskq_dsn, tq.schema, "--min-workers", "0",
                 "--max-age", "1h").exit_code == 0

    worker = worker_process(APP, "-c", "1", *FAST)
    worker.wait_ready()
    # the live worker does not register the task: it parks the job, which is then named
    # on a line of its own and is no longer a backlog (issue 12)
    wait_until(lambda: db.execute(f'SELECT bool_and(parked) FROM "{tq.schema}".jobs')
               .fetchone()[0], 10, what="the unknown task's job parked")
    healthy = check(pgtaskq_dsn, tq.schema, "--json")
    assert healthy.exit_code == 0, healthy.output
    report = json.loads(healthy.output)
    assert report["healthy"] is True
    names = {c["name"]: c for c in report["checks"]}
    assert names["workers"]["alive"] == 1
    assert names["backlog"]["queue"] is None
    assert names["unknown task"]["task"] == "nobody.knows.this"
    assert names["unknown task"]["decides_health"] is False
    assert names["unknown task"]["status"] == "warning"
    assert set(names["dead tuples"]["tables"]) >= {"jobs", "job_history"} or \
        names["dead tuples"]["tables"] == {}  # statistics may not have arrived yet
    assert worker.stop() == 0
    gone = check(pgtaskq_dsn, tq.schema, "--max-age", "1h")
    assert gone.exit_code == 1 and "0 alive" in gone.output


def test_check_reports_an_open_transaction_pinning_the_xmin_horizon(tq, pgtaskq_dsn):
    with psycopg.connect(pgtaskq_dsn) as holder:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT 1")  # the snapshot is now taken and held
        pid = holder.info.backend_pid
        report = check(pgtaskq_dsn, tq.schema, "--min-workers", "0")
        assert report.exit_code == 0  # reported, not failing without a threshold
        assert "oldest open transaction: session" in report.output
        pinned = check(pgtaskq_dsn, tq.schema, "--min-workers", "0", "--max-xact-age", "1ms")
        assert pinned.exit_code == 1 and "FAIL  xmin horizon" in pinned.output
        assert str(pid) in pinned.output or "session" in pinned.output
        holder.rollback()


def test_check_with_an_unreachable_database_is_a_one_line_error():
    result = CliRunner().invoke(cli, ["--dsn", "postgresql://postgres@127.0.0.1:1/x"
                                      "?connect_timeout=2", "check"])
    assert result.exit_code == 3  # could not check, told apart from unhealthy (1)
    assert result.stderr.startswith("Error: could not check: ")
    assert result.stderr.count("\n") == 1
