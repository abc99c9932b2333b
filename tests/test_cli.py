"""The ``pgtaskq`` command line, run in-process with click's CliRunner on a real database.

Every command's success path and its user-error paths; a user error must be exactly one
``Error: ...`` line on stderr with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql

from pgtaskq import TaskQueue
from pgtaskq.cli import cli
from pgtaskq.sql.migrations import LATEST_VERSION

Run = Callable[..., Result]
UNREACHABLE_DSN = "postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=2"


def assert_user_error(result: Result, *fragments: str, exit_code: int = 1) -> str:
    """One ``Error:`` line on stderr, the expected exit code, and no escaped exception."""
    assert result.exit_code == exit_code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def invoke(*args: str, input: str | None = None, env: dict | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env=env, catch_exceptions=True)


@pytest.fixture
def run(pgtaskq_dsn: str, tq: TaskQueue) -> Run:
    """Run ``pgtaskq --dsn <test dsn> --schema <test schema> ARGS...``."""

    def run_cli(*args: str, input: str | None = None) -> Result:
        return invoke("--dsn", pgtaskq_dsn, "--schema", tq.schema, *args, input=input)

    return run_cli


@pytest.fixture
def bare_schema(pgtaskq_dsn: str, schema_name: str) -> Iterator[str]:
    """A schema name with nothing installed; whatever a test installs there is removed."""
    yield schema_name
    TaskQueue(pgtaskq_dsn, schema=schema_name).uninstall()


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def enqueue_id(run: Run, *args: str) -> int:
    return int(ok(run("enqueue", *args)).strip())


# -- the group --------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    out = ok(invoke("--help"))
    for command in ("install", "upgrade", "uninstall", "enqueue", "jobs", "show", "cancel",
                    "retry"):
        assert f"  {command} " in out
    assert "PGTASKQ_DSN" in out and "PGTASKQ_SCHEMA" in out


def test_version() -> None:
    from pgtaskq import __version__

    assert __version__ in ok(invoke("--version"))


def test_missing_dsn_names_the_variable() -> None:
    result = invoke("jobs", env={"PGTASKQ_DSN": None})
    assert_user_error(result, "PGTASKQ_DSN", "--dsn")


def test_unreachable_dsn(schema_name: str) -> None:
    result = invoke("--dsn", UNREACHABLE_DSN, "--schema", schema_name, "jobs")
    assert_user_error(result, "cannot connect to PostgreSQL")


def test_malformed_dsn() -> None:
    assert_user_error(invoke("--dsn", "not a dsn", "install"), "invalid DSN")


def test_invalid_schema_name(pgtaskq_dsn: str) -> None:
    result = invoke("--dsn", pgtaskq_dsn, "--schema", "a;drop", "install")
    assert_user_error(result, "invalid schema name", "'a;drop'")


def test_dsn_and_schema_from_environment(pgtaskq_dsn: str, tq: TaskQueue) -> None:
    job_id = tq.enqueue("env.task")
    result = invoke("show", str(job_id), "--json",
                    env={"PGTASKQ_DSN": pgtaskq_dsn, "PGTASKQ_SCHEMA": tq.schema})
    assert json.loads(ok(result))["task"] == "env.task"


@pytest.mark.parametrize(
    "args",
    [("jobs",), ("show", "1"), ("enqueue", "x"), ("cancel", "1"), ("retry", "1")],
)
def test_schema_not_installed(pgtaskq_dsn: str, bare_schema: str, args: tuple[str, ...]) -> None:
    result = invoke("--dsn", pgtaskq_dsn, "--schema", bare_schema, *args)
    assert_user_error(result, "not installed", f"run 'pgtaskq --schema {bare_schema} install'")


def test_schema_newer_than_code(run: Run, tq: TaskQueue, db: psycopg.Connection) -> None:
    db.execute(
        sql.SQL("INSERT INTO {}.schema_version (version, pgtaskq_version) VALUES (%s, 'x')")
        .format(sql.Identifier(tq.schema)),
        [LATEST_VERSION + 1],
    )
    assert_user_error(run("jobs"), "newer than this pgtaskq")
    assert_user_error(run("install"), "newer than this pgtaskq")


# -- install / upgrade / uninstall ------------------------------------------------------


def test_install_then_install_again(pgtaskq_dsn: str, bare_schema: str) -> None:
    out = ok(invoke("--dsn", pgtaskq_dsn, "--schema", bare_schema, "install"))
    assert f"installed pgtaskq in schema '{bare_schema}' (version {LATEST_VERSION})" in out
    out = ok(invoke("--dsn", pgtaskq_dsn, "--schema", bare_schema, "install"))
    assert "up to date" in out
    assert TaskQueue(pgtaskq_dsn, schema=bare_schema).check_installed() == LATEST_VERSION


def test_upgrade_installs_and_is_idempotent(pgtaskq_dsn: str, bare_schema: str) -> None:
    out = ok(invoke("--dsn", pgtaskq_dsn, "--schema", bare_schema, "upgrade"))
    assert "installed" in out
    assert "up to date" in ok(invoke("--dsn", pgtaskq_dsn, "--schema", bare_schema, "upgrade"))


def test_uninstall_asks_and_keeps_tables_on_no(run: Run, tq: TaskQueue) -> None:
    job_id = tq.enqueue("keep.me")
    result = run("uninstall", input="n\n")
    assert result.exit_code == 1
    assert "Aborted" in result.output
    assert tq.get_job(job_id) is not None


def test_uninstall_on_yes_answer(run: Run, tq: TaskQueue) -> None:
    tq.enqueue("drop.me")
    assert "uninstalled" in ok(run("uninstall", input="y\n"))
    assert_user_error(run("jobs"), f"run 'pgtaskq --schema {tq.schema} install'")


def test_uninstall_with_yes_flag_twice(run: Run) -> None:
    assert "uninstalled" in ok(run("uninstall", "--yes"))
    assert "was not installed" in ok(run("uninstall", "-y"))


# -- enqueue ----------------------------------------------------------------------------


def test_enqueue_prints_the_id_and_stores_options(run: Run, tq: TaskQueue) -> None:
    job_id = enqueue_id(run, "reports.build", "--args", '[7, "x"]', "--kwargs", '{"a": 1}',
                        "--queue", "reports", "--priority", "5", "--max-attempts", "3")
    job = tq.get_job(job_id)
    assert job is not None
    assert (job.task, job.args, job.kwargs, job.queue, job.priority, job.max_attempts) == (
        "reports.build", [7, "x"], {"a": 1}, "reports", 5, 3)


def test_enqueue_delay(run: Run, tq: TaskQueue) -> None:
    before = datetime.now(timezone.utc)
    job = tq.get_job(enqueue_id(run, "later", "--delay", "120"))
    assert job is not None
    assert job.run_at >= before + timedelta(seconds=119)


def test_enqueue_dedupe_key_returns_the_same_id(run: Run) -> None:
    first = enqueue_id(run, "once", "--dedupe-key", "k1")
    assert enqueue_id(run, "once", "--dedupe-key", "k1") == first
    assert enqueue_id(run, "once", "--dedupe-key", "k2") != first


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--args", "[1,"), ("--args is not valid JSON",)),
        (("--kwargs", "{a: 1}"), ("--kwargs is not valid JSON",)),
        (("--args", '{"a": 1}'), ("--args must be a JSON array", "dict")),
        (("--kwargs", "[1]"), ("--kwargs must be a JSON object", "list")),
        (("--queue", "bad queue"), ("invalid queue name",)),
        (("--delay", "-1"), ("delay", ">= 0")),
        (("--max-attempts", "0"), ("max_attempts",)),
        (("--priority", str(2**40)), ("priority", "out of range")),
        (("--dedupe-key", ""), ("dedupe_key",)),
    ],
)
def test_enqueue_bad_input(
    run: Run, tq: TaskQueue, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    assert_user_error(run("enqueue", "t", *args), *fragments)
    assert tq.list_jobs() == []


def test_enqueue_usage_error_for_non_numeric_priority(run: Run) -> None:
    result = run("enqueue", "t", "--priority", "high")
    assert result.exit_code == 2
    assert "Invalid value for '--priority'" in result.stderr


# -- jobs / show ------------------------------------------------------------------------


def test_jobs_table_and_filters(run: Run, tq: TaskQueue) -> None:
    a = tq.enqueue("mail.send", queue="mail")
    b = tq.enqueue("reports.build", queue="reports")
    c = tq.enqueue("reports.build", queue="reports")
    tq.cancel(c)

    out = ok(run("jobs"))
    header, _rule, *rows = out.strip().splitlines()
    assert header.split()[:4] == ["id", "status", "task", "queue"]
    assert [int(row.split()[0]) for row in rows] == [c, b, a]  # newest first

    def listed(*args: str) -> list[int]:
        return [job["id"] for job in json.loads(ok(run("jobs", "--json", *args)))]

    assert listed() == [c, b, a]
    assert listed("--status", "cancelled") == [c]
    assert listed("--status", "queued") == [b, a]
    assert listed("--task", "mail.send") == [a]
    assert listed("--queue", "reports") == [c, b]
    assert listed("--limit", "1") == [c]


def test_jobs_empty(run: Run) -> None:
    assert ok(run("jobs")).strip() == "no jobs"
    assert json.loads(ok(run("jobs", "--json"))) == []


def test_jobs_unknown_status_is_a_usage_error(run: Run) -> None:
    result = run("jobs", "--status", "exploded")
    assert result.exit_code == 2
    assert "Invalid value for '--status'" in result.stderr


def test_show_table_and_json(run: Run, tq: TaskQueue, db: psycopg.Connection) -> None:
    job_id = tq.enqueue("reports.build", args=[42], kwargs={"fmt": "pdf"}, dedupe_key="r42")
    db.execute(
        sql.SQL("UPDATE {}.jobs SET last_error = %s WHERE id = %s").format(
            sql.Identifier(tq.schema)),
        ["Traceback (most recent call last):\nValueError: boom", job_id],
    )
    out = ok(run("show", str(job_id)))
    assert "reports.build" in out and '{"fmt": "pdf"}' in out and "r42" in out
    assert out.rstrip().endswith("ValueError: boom")
    shown = json.loads(ok(run("show", str(job_id), "--json")))
    assert (shown["id"], shown["args"], shown["status"]) == (job_id, [42], "queued")
    assert datetime.fromisoformat(shown["created_at"]).tzinfo is not None


def test_show_unknown_id(run: Run) -> None:
    assert_user_error(run("show", "987654"), "no job with id 987654")


def test_show_non_numeric_id_is_a_usage_error(run: Run) -> None:
    assert run("show", "abc").exit_code == 2


# -- cancel / retry ---------------------------------------------------------------------


def test_cancel_queued_jobs(run: Run, tq: TaskQueue) -> None:
    a, b = tq.enqueue("t"), tq.enqueue("t")
    out = ok(run("cancel", str(a), str(b)))
    assert f"job {a}: cancelled" in out and f"job {b}: cancelled" in out
    assert {tq.get_job(a).status, tq.get_job(b).status} == {"cancelled"}  # type: ignore[union-attr]


def test_cancel_running_job_requests_it(run: Run, tq: TaskQueue, db: psycopg.Connection) -> None:
    job_id = tq.enqueue("t")
    db.execute(
        sql.SQL("UPDATE {}.jobs SET status = 'running', worker_id = 1 WHERE id = %s").format(
            sql.Identifier(tq.schema)),
        [job_id],
    )
    assert f"job {job_id}: cancel requested" in ok(run("cancel", str(job_id)))
    job = tq.get_job(job_id)
    assert job is not None and job.cancel_requested


def test_cancel_reports_unknown_and_finished_ids(run: Run, tq: TaskQueue) -> None:
    done, fresh = tq.enqueue("t"), tq.enqueue("t")
    tq.cancel(done)
    result = run("cancel", "999999", str(done), str(fresh))
    line = assert_user_error(result, "unknown job id(s) 999999",
                             f"not cancelled (already finished): {done}")
    assert str(fresh) not in line
    assert f"job {fresh}: cancelled" in result.stdout  # the good id was still handled
    assert tq.get_job(fresh).status == "cancelled"  # type: ignore[union-attr]


def test_cancel_needs_an_id(run: Run) -> None:
    assert run("cancel").exit_code == 2


def test_retry_cancelled_jobs(run: Run, tq: TaskQueue) -> None:
    job_id = tq.enqueue("t")
    tq.cancel(job_id)
    assert f"job {job_id}: queued again" in ok(run("retry", str(job_id)))
    assert tq.get_job(job_id).status == "queued"  # type: ignore[union-attr]


def test_retry_reports_unknown_and_live_ids(run: Run, tq: TaskQueue) -> None:
    queued = tq.enqueue("t")
    assert_user_error(run("retry", str(queued), "424242"), "unknown job id(s) 424242",
                      f"not retried (not failed or cancelled): {queued}")


def test_retry_refused_when_dedupe_key_is_taken(run: Run, tq: TaskQueue) -> None:
    old = tq.enqueue("t", dedupe_key="k")
    tq.cancel(old)
    tq.enqueue("t", dedupe_key="k")  # a new live job holds the key now
    assert_user_error(run("retry", str(old)), "not retried (", "dedupe_key", f"): {old}")
