"""Bad input to enqueue: a clear error before any SQL, and nothing written.

"Before any SQL" is shown two ways: on a real schema the table stays empty and the
caller's transaction is untouched; on a TaskQueue whose DSN points nowhere, the validation
error (not a connection error) is what comes out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from pgtaskq import ConfigurationError, TaskQueue

NOWHERE = "postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=1"


class Widget:
    pass


@pytest.fixture
def offline() -> TaskQueue:
    """A TaskQueue that fails if it ever tries to reach a database."""
    return TaskQueue(NOWHERE, schema="offline")


@pytest.fixture
def conn(pgtaskq_dsn: str, tq: TaskQueue) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pgtaskq_dsn) as caller:
        yield caller


@pytest.mark.parametrize(
    ("args", "kwargs", "type_name"),
    [
        ([Widget()], None, "Widget"),
        (None, {"when": datetime.now(timezone.utc)}, "datetime"),
        ([b"bytes"], None, "bytes"),
        ([{"nested": [{1, 2}]}], None, "set"),
        ([1, object()], None, "object"),
    ],
)
def test_unserialisable_arguments_raise_type_error_and_write_nothing(
    tq: TaskQueue, conn: psycopg.Connection, args: Any, kwargs: Any, type_name: str
) -> None:
    with pytest.raises(TypeError, match=rf"\b{type_name}\b"):
        tq.enqueue("t", args=args, kwargs=kwargs, conn=conn)
    # nothing reached the server: the caller's transaction was not even started
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with pytest.raises(TypeError, match=rf"\b{type_name}\b"):
        tq.enqueue("t", args=args, kwargs=kwargs)
    assert tq.list_jobs() == []


def test_task_enqueue_with_unserialisable_argument(tq: TaskQueue) -> None:
    @tq.task
    def handle(item: object) -> None: ...

    with pytest.raises(TypeError, match="Widget"):
        handle.enqueue(Widget())
    with pytest.raises(TypeError, match="Widget"):
        handle.using(priority=1).enqueue(item=Widget())
    assert tq.list_jobs() == []


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nan_and_infinity_are_refused(offline: TaskQueue, value: float) -> None:
    with pytest.raises(TypeError, match="JSON"):
        offline.enqueue("t", args=[value])


def test_non_string_kwargs_keys_are_refused(offline: TaskQueue) -> None:
    with pytest.raises(TypeError, match="keys must be strings"):
        offline.enqueue("t", kwargs={1: "a"})


def test_enqueue_many_is_all_or_nothing(tq: TaskQueue) -> None:
    items = [{"args": [1]}, {"args": [2]}, {"args": [Widget()]}, {"args": [4]}]
    with pytest.raises(TypeError, match="Widget"):
        tq.enqueue_many("t", items)
    assert tq.list_jobs() == []


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ({"args": [1]}, "list of dicts"),
        ("abc", "list of dicts"),
        ([{"args": [1]}, 7], "item 1 is not a dict"),
        ([{"args": [1], "prio": 3}], "unknown option 'prio'"),
    ],
)
def test_enqueue_many_bad_shapes(offline: TaskQueue, jobs: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        offline.enqueue_many("t", jobs)


# -- schema name and DSN ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a;drop", 'x"y', "Public", "pg_catalog", "1abc", "a" * 51, "a b"]
)
def test_invalid_schema_name_is_refused_before_any_sql(name: str) -> None:
    with pytest.raises(ValueError, match="invalid schema name"):
        TaskQueue(NOWHERE, schema=name)


def test_invalid_schema_name_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGTASKQ_SCHEMA", "a;drop")
    with pytest.raises(ConfigurationError, match="a;drop"):
        TaskQueue(NOWHERE)


def test_schema_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGTASKQ_SCHEMA", "from_env")
    assert TaskQueue(NOWHERE).schema == "from_env"
    assert TaskQueue(NOWHERE, schema="explicit").schema == "explicit"


def test_missing_dsn_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGTASKQ_DSN", raising=False)
    tq = TaskQueue(schema="no_dsn")  # defining it needs no database
    with pytest.raises(ConfigurationError, match="PGTASKQ_DSN"):
        tq.enqueue("t")
    with pytest.raises(ConfigurationError, match="PGTASKQ_DSN"):
        tq.get_job(1)


def test_dsn_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, pgtaskq_dsn: str, tq: TaskQueue
) -> None:
    monkeypatch.setenv("PGTASKQ_DSN", pgtaskq_dsn)
    from_env = TaskQueue(schema=tq.schema)
    try:
        job_id = from_env.enqueue("t")
    finally:
        from_env.close()
    assert tq.get_job(job_id) is not None


def test_malformed_dsn_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="invalid DSN"):
        TaskQueue("not a dsn", schema="x").enqueue("t")


# -- scheduling options -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"delay": -1}, ValueError, "delay"),
        ({"delay": -0.001}, ValueError, "delay"),
        ({"delay": math.nan}, ValueError, "delay"),
        ({"delay": math.inf}, ValueError, "delay"),
        ({"delay": "10"}, TypeError, "delay"),
        ({"delay": True}, TypeError, "delay"),
        ({"run_at": datetime(2030, 1, 1)}, ValueError, "timezone-aware"),
        ({"run_at": "2030-01-01T00:00:00Z"}, TypeError, "run_at must be a datetime"),
        ({"delay": 5, "run_at": datetime.now(timezone.utc) + timedelta(hours=1)},
         ValueError, "not both"),
        ({"queue": "has space"}, ValueError, "queue"),
        ({"queue": "x" * 101}, ValueError, "queue"),
        ({"priority": 1.5}, TypeError, "priority"),
        ({"priority": True}, TypeError, "priority"),
        ({"priority": 2**31}, ValueError, "priority"),
        ({"max_attempts": 0}, ValueError, "max_attempts"),
        ({"max_attempts": "3"}, TypeError, "max_attempts"),
        ({"dedupe_key": ""}, TypeError, "dedupe_key"),
        ({"dedupe_key": 42}, TypeError, "dedupe_key"),
    ],
)
def test_bad_options(
    offline: TaskQueue, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        offline.enqueue("t", **options)
    with pytest.raises(error, match=message):
        offline.enqueue_many("t", [{}, options])


@pytest.mark.parametrize("name", ["", "   "])
def test_bad_task_names(offline: TaskQueue, name: Any) -> None:
    with pytest.raises(ConfigurationError, match="task name"):
        offline.enqueue(name)


@pytest.mark.parametrize("name", [None, 3])
def test_task_names_of_the_wrong_type(offline: TaskQueue, name: Any) -> None:
    with pytest.raises(TypeError, match="task name"):
        offline.enqueue(name)


def test_unknown_option_in_using_is_named(offline: TaskQueue) -> None:
    @offline.task
    def job() -> None: ...

    with pytest.raises(TypeError, match=r"unknown option 'priorty'.*valid: queue, priority"):
        job.using(priorty=3)
    with pytest.raises(TypeError, match=r"unknown options 'a', 'b'"):
        job.using(queue="q").using(a=1, b=2)


def test_using_validates_at_enqueue_without_touching_the_database(offline: TaskQueue) -> None:
    @offline.task
    def job() -> None: ...

    with pytest.raises(ValueError, match="delay"):
        job.using(delay=-5).enqueue()


def test_bad_task_options_fail_at_definition(offline: TaskQueue) -> None:
    with pytest.raises(ValueError, match="queue"):
        offline.task(queue="no spaces please")(lambda: None)
    with pytest.raises(ValueError, match="timeout"):
        offline.task(timeout=0)(lambda: None)


def test_two_tasks_with_one_name_are_refused(offline: TaskQueue) -> None:
    offline.task(name="same")(lambda: 1)
    with pytest.raises(ConfigurationError, match="same"):
        offline.task(name="same")(lambda: 2)


@pytest.mark.parametrize(
    ("args", "kwargs"), [(["a\x00b"], None), (None, {"k": {"nested": "\x00"}}), (None, {"\x00": 1})]
)
def test_nul_character_is_refused_before_the_callers_transaction_is_touched(
    tq: TaskQueue, conn: psycopg.Connection, args: Any, kwargs: Any
) -> None:
    with pytest.raises(ValueError, match="NUL"):
        tq.enqueue("t", args=args, kwargs=kwargs, conn=conn)
    with pytest.raises(ValueError, match="NUL"):
        tq.enqueue_many("t", [{"args": [1]}, {"args": args, "kwargs": kwargs}], conn=conn)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert tq.list_jobs() == []


def test_backslash_u0000_as_text_is_stored(tq: TaskQueue) -> None:
    text = "C:\\u0000\\\\u0000"  # backslashes, not NUL characters
    job = tq.get_job(tq.enqueue("t", args=[text], kwargs={"k": text}))
    assert job is not None and (job.args, job.kwargs) == ([text], {"k": text})
