"""Every user-facing value is validated before any SQL (issue 13, finding 7; issue 12's
names): a clear ``ConfigurationError`` (a ``ValueError``) or ``TypeError``, nothing
written, a ``conn=`` transaction untouched; output escapes control characters."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from worker_helpers import TESTS

from pgtaskq import ConfigurationError, TaskQueue, Worker
from pgtaskq.cli import cli
from pgtaskq.duration import parse
from pgtaskq.options import MAX_JSON_DEPTH, MAX_NAME_LENGTH
from pgtaskq.sql import validate_schema_name
from pgtaskq.testing import WorkerProcess

NOWHERE = "postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=1"


@pytest.fixture
def offline() -> TaskQueue:
    """A TaskQueue that fails if it ever tries to reach a database."""
    return TaskQueue(NOWHERE, schema="offline")


@pytest.fixture
def conn(pgtaskq_dsn: str, tq: TaskQueue) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pgtaskq_dsn) as caller:
        yield caller


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


BAD_NAMES = [
    "reports.build\x00v2",            # NUL: PostgreSQL text cannot hold it
    "reports\x1b]0;pwned\x07",        # a terminal escape sequence
    "line\nbreak",
    "tab\tbed",
    "bidi\u202eevil",
    "lone\ud800surrogate",
    "x" * (MAX_NAME_LENGTH + 1),       # does not fit the indexes
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_task_names_are_refused_at_registration(offline: TaskQueue, name: str) -> None:
    with pytest.raises(ConfigurationError, match="task name"):
        offline.task(name=name)(lambda: None)
    assert name not in offline.tasks


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_task_names_are_refused_at_enqueue(
    tq: TaskQueue, conn: psycopg.Connection, name: str
) -> None:
    with pytest.raises(ConfigurationError, match="task name"):
        tq.enqueue(name, conn=conn)
    with pytest.raises(ConfigurationError, match="task name"):
        tq.enqueue_many(name, [{}], conn=conn)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert tq.list_jobs() == []


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_schedule_names_are_refused(offline: TaskQueue, name: str) -> None:
    with pytest.raises(ConfigurationError, match="name"):
        offline.periodic("* * * * *", name=name)


def test_a_long_function_name_makes_a_bad_schedule_name(offline: TaskQueue) -> None:
    @offline.task(name="short")
    def task() -> None: ...

    def long_named() -> None: ...
    long_named.__qualname__ = "f" * MAX_NAME_LENGTH
    with pytest.raises(ConfigurationError, match="schedule name"):
        offline.periodic("* * * * *")(long_named)


def test_a_worker_with_a_nul_in_a_task_name_refuses_to_start(
    tq: TaskQueue, pgtaskq_dsn: str
) -> None:
    worker = WorkerProcess("apps.nul_name_app:tq", pgtaskq_dsn, tq.schema,
                           pythonpath=[TESTS])
    try:
        code = worker.wait(60)
        output = worker.output()
        assert code != 0, output
        assert "ready" not in output
        assert "task name" in output and "\\x00" in output
        assert "Traceback" not in output
    finally:
        worker.close()


@pytest.mark.parametrize("queue", ["default\n", "", "a b", "q\x00", "é"])
def test_bad_queue_names(tq: TaskQueue, conn: psycopg.Connection, queue: str) -> None:
    with pytest.raises(ConfigurationError, match="queue name"):
        tq.enqueue("t", queue=queue, conn=conn)
    with pytest.raises(ConfigurationError, match="queue name"):
        tq.enqueue_many("t", [{"queue": queue}], conn=conn)
    with pytest.raises(ConfigurationError, match="queue name"):
        tq.task(name="t", queue=queue)(lambda: None)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert tq.list_jobs() == []


@pytest.mark.parametrize("schema", ["evil\n", "evil\x00", "Evil", "pg_evil", ""])
def test_bad_schema_names(schema: str) -> None:
    with pytest.raises(ConfigurationError, match="schema name"):
        validate_schema_name(schema)
    with pytest.raises(ConfigurationError, match="schema name"):
        TaskQueue(NOWHERE, schema=schema)


def test_max_attempts_zero_is_an_error_not_the_default(offline: TaskQueue) -> None:
    with pytest.raises(ConfigurationError, match="max_attempts"):
        offline.task(name="t", max_attempts=0)(lambda: None)
    with pytest.raises(ConfigurationError, match="max_attempts"):
        offline.enqueue("t", max_attempts=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay": 1e15}, "delay must be at most"),
        ({"delay": math.inf}, "delay must be a finite"),
        ({"delay": math.nan}, "delay must be a finite"),
        ({"dedupe_key": "k" * 3000}, "dedupe_key is 3000 characters"),
        ({"dedupe_key": "k\x00"}, "dedupe_key"),
        ({"dedupe_key": "k\udc00"}, "dedupe_key"),
    ],
)
def test_values_the_server_would_refuse_are_refused_first(
    tq: TaskQueue, conn: psycopg.Connection, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        tq.enqueue("t", conn=conn, **options)
    with pytest.raises(ConfigurationError, match=message):
        tq.enqueue_many("t", [options], conn=conn)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert tq.list_jobs() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["lone \ud800 high"], "lone surrogate"),
        ([{"k": "lone \udfff low"}], "lone surrogate"),
        ([nested(MAX_JSON_DEPTH + 1)], "nested too deep"),
        ([nested(990)], "nested too deep"),
        ([nested(5000)], "nested too deep"),
        (["nul \x00 here"], "NUL"),
    ],
)
def test_arguments_a_worker_could_not_read_are_refused(
    tq: TaskQueue, conn: psycopg.Connection, args: list[Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        tq.enqueue("t", args=args, conn=conn)
    with pytest.raises(ConfigurationError, match=message):
        tq.enqueue_many("t", [{"args": args}], conn=conn)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert tq.list_jobs() == []


def test_huge_ints_are_refused_even_when_the_producer_lifted_the_limit(
    tq: TaskQueue, conn: psycopg.Connection
) -> None:
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        with pytest.raises(ConfigurationError, match="4300 digits"):
            tq.enqueue("t", args=[10**5000], conn=conn)
    finally:
        sys.set_int_max_str_digits(previous)
    with pytest.raises(ConfigurationError, match="4300 digits"):
        tq.enqueue("t", kwargs={"n": 10**5000}, conn=conn)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert tq.list_jobs() == []


def test_what_is_allowed_still_passes(tq: TaskQueue) -> None:
    # args itself is the first of the MAX_JSON_DEPTH levels
    ok_args = [nested(MAX_JSON_DEPTH - 1), "emoji \U0001F600", "x" * 5000, 10**4000, "\\ud800"]
    job_id = tq.enqueue("caf\u00e9.t\u00e2che", args=ok_args, dedupe_key="k" * 500)
    [many_id] = tq.enqueue_many("t", [{"args": ok_args, "kwargs": {"deep": ok_args[0]}}])
    for found in (tq.get_job(job_id), tq.get_job(many_id)):
        assert found is not None and found.args == ok_args


@pytest.mark.parametrize("setting", ["poll_interval", "lease", "heartbeat_interval",
                                     "rescue_interval", "grace", "backoff_base",
                                     "keep_succeeded", "prune_interval"])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_worker_durations_must_be_finite(offline: TaskQueue, setting: str,
                                         value: float) -> None:
    with pytest.raises(ConfigurationError, match=setting):
        Worker(offline, **{setting: value})


@pytest.mark.parametrize("option", ["--poll-interval", "--lease", "--grace",
                                    "--heartbeat-interval", "--keep-failed"])
@pytest.mark.parametrize("value", ["inf", "nan", "Infinity"])
def test_cli_worker_durations_must_be_finite(option: str, value: str) -> None:
    result = CliRunner().invoke(cli, ["--dsn", NOWHERE, "worker", "apps.basic:tq",
                                      option, value])
    assert result.exit_code == 2, result.output
    assert "finite" in result.output


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_stats_watch_must_be_finite(value: str) -> None:
    result = CliRunner().invoke(cli, ["--dsn", NOWHERE, "stats", "--watch", value])
    assert result.exit_code == 2, result.output
    assert "finite" in result.output


def test_duration_parse_refuses_infinity() -> None:
    with pytest.raises(ValueError, match="finite"):
        parse("inf")


def test_cli_enqueue_errors_are_one_line(pgtaskq_dsn: str, tq: TaskQueue) -> None:
    for extra in (["--queue", ""], ["--delay", "1e15"], ["--max-attempts", "0"]):
        result = subprocess.run(
            [sys.executable, "-m", "pgtaskq", "--dsn", pgtaskq_dsn, "--schema", tq.schema,
             "enqueue", "t", *extra], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert tq.list_jobs() == []


ESCAPE = "\x1b]0;owned\x07\x1b[2J"


def test_output_escapes_control_characters(
    pgtaskq_dsn: str, tq: TaskQueue, db: psycopg.Connection
) -> None:
    """Rows written by an older version, by hand, or by a task's own error text."""
    job_id = tq.enqueue("t")
    db.execute(sql.SQL("UPDATE {}.jobs SET task = %s, last_error = %s WHERE id = %s")
               .format(sql.Identifier(tq.schema)),
               [f"t{ESCAPE}", f"Boom{ESCAPE}\nsecond line", job_id])
    runner = CliRunner()
    for command in (["jobs"], ["show", str(job_id)], ["stats"]):
        result = runner.invoke(cli, ["--dsn", pgtaskq_dsn, "--schema", tq.schema, *command])
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output, command
    shown = runner.invoke(cli, ["--dsn", pgtaskq_dsn, "--schema", tq.schema,
                                "show", str(job_id)]).output
    assert "\\x1b]0;owned\\x07" in shown and "second line" in shown


def test_worker_log_escapes_control_characters_of_job_errors(
    tq: TaskQueue, db: psycopg.Connection, worker_process
) -> None:
    from worker_helpers import FAST, create_runs_table

    create_runs_table(db, tq.schema)
    worker = worker_process("apps.basic:tq", "-c", "1", *FAST)
    worker.wait_ready()
    job_id = tq.enqueue("fail", args=[f"boom{ESCAPE}\nforged line"], max_attempts=2)
    from pgtaskq.testing import wait_until

    wait_until(lambda: (job := tq.get_job(job_id)) and job.status == "failed", 30,
               what="job failed twice")
    assert worker.stop() == 0
    output = worker.output()
    assert "boom\\x1b]0;owned\\x07" in output, output
    assert "\x1b" not in output and "\x07" not in output  # in the traceback too
