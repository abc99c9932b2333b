"""Functions planted on the search path never run inside pgtaskq's statements (issue 13,
finding 3).

A role that can CREATE in a schema on the caller's search path (anyone in ``public`` before
PostgreSQL 15) defines functions that shadow the built-ins pgtaskq calls, e.g.
``unnest(text[])``, an exact match that beats ``pg_catalog.unnest(anyarray)``. Here each
planted function records that it ran, then does the built-in's job, and the test's
sessions put the planting schema first, even before ``pg_catalog`` (so ``now()`` would be
shadowed too): the producer's ``conn=`` and, through ``PGOPTIONS``, every connection of a
real worker.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from worker_helpers import create_runs_table

import pgtaskq.sql as sql_package
from pgtaskq import TaskQueue
from pgtaskq.sql import render
from pgtaskq.testing import wait_until

PLANTED = {
    # name(argument types): returns, body returning the built-in's result
    "unnest(a text[])": ("SETOF text", "RETURN QUERY SELECT pg_catalog.unnest(a);"),
    "unnest(a bigint[])": ("SETOF bigint", "RETURN QUERY SELECT pg_catalog.unnest(a);"),
    "unnest(a integer[])": ("SETOF integer", "RETURN QUERY SELECT pg_catalog.unnest(a);"),
    "unnest(a jsonb[])": ("SETOF jsonb", "RETURN QUERY SELECT pg_catalog.unnest(a);"),
    "cardinality(a text[])": ("integer", "RETURN pg_catalog.cardinality(a);"),
    "now()": ("timestamptz", "RETURN pg_catalog.now();"),
    "jsonb_array_elements(a jsonb)": (
        "SETOF jsonb", "RETURN QUERY SELECT pg_catalog.jsonb_array_elements(a);"),
    "pg_notify(c text, p text)": ("void", "PERFORM pg_catalog.pg_notify(c, p);"),
    "make_interval(secs double precision)": (
        "interval", "RETURN pg_catalog.make_interval(secs => secs);"),
    "date_trunc(f text, t timestamptz)": ("timestamptz", "RETURN pg_catalog.date_trunc(f, t);"),
    "hashtext(t text)": ("integer", "RETURN pg_catalog.hashtext(t);"),
}


@pytest.fixture
def planted(db: psycopg.Connection) -> Iterator[str]:
    """A schema of look-alike built-ins that log each call to ``<schema>.calls``."""
    name = f"plant_{uuid.uuid4().hex[:10]}"
    ident = sql.Identifier(name)
    db.execute(sql.SQL("CREATE SCHEMA {s}; CREATE TABLE {s}.calls (fn text)").format(s=ident))
    db.execute(sql.SQL("GRANT USAGE ON SCHEMA {s} TO PUBLIC; "
                       "GRANT INSERT, SELECT ON {s}.calls TO PUBLIC").format(s=ident))
    for signature, (returns, body) in PLANTED.items():
        function = signature.split("(")[0]
        db.execute(sql.SQL(
            "CREATE FUNCTION {s}." + signature + " RETURNS " + returns
            + " LANGUAGE plpgsql AS $$ BEGIN INSERT INTO {s}.calls VALUES ({fn}); "
            + body + " END $$"
        ).format(s=ident, fn=sql.Literal(function)))
    yield name
    db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident))


def calls(db: psycopg.Connection, schema: str) -> list[str]:
    rows = db.execute(sql.SQL("SELECT fn FROM {}.calls").format(sql.Identifier(schema)))
    return [r[0] for r in rows.fetchall()]


def test_the_planted_functions_do_run_for_unqualified_calls(
    pgtaskq_dsn: str, planted: str, db: psycopg.Connection
) -> None:
    """The trap works: otherwise the tests below could not fail."""
    with psycopg.connect(pgtaskq_dsn, autocommit=True,
                         options=f"-c search_path={planted},pg_catalog") as conn:
        conn.execute("SELECT now(), unnest('{a}'::text[])")
    assert set(calls(db, planted)) == {"now", "unnest"}


def test_producer_statements_never_run_planted_functions(
    pgtaskq_dsn: str, tq: TaskQueue, planted: str, db: psycopg.Connection
) -> None:
    with psycopg.connect(pgtaskq_dsn,
                         options=f"-c search_path={planted},pg_catalog") as conn:
        first = tq.enqueue("t", args=[1], conn=conn)
        tq.enqueue("t", dedupe_key="k", delay=5, conn=conn)
        tq.enqueue_many("t", [{"args": [1]}, {"args": [2], "queue": "q", "priority": 3,
                                              "delay": 1, "max_attempts": 2}], conn=conn)
        tq.enqueue_many("t", [{"dedupe_key": "k"}, {"dedupe_key": "m"}], conn=conn)
        assert tq.cancel(first, conn=conn)
        assert tq.retry(first, conn=conn)
        conn.commit()
    assert calls(db, planted) == []
    assert len(tq.list_jobs()) == 5


def test_worker_statements_never_run_planted_functions(
    pgtaskq_dsn: str, tq: TaskQueue, planted: str, db: psycopg.Connection, worker_process
) -> None:
    create_runs_table(db, tq.schema)
    ok = tq.enqueue("record", args=["ran"])
    failing = tq.enqueue("fail", max_attempts=2)
    worker = worker_process("apps.basic:tq", "--concurrency", "2", "--poll-interval", "0.2",
                            "--backoff-base", "0.1", "--heartbeat-interval", "0.2",
                            "--lease", "5",
                            env={"PGOPTIONS": f"-c search_path={planted},pg_catalog"})
    worker.wait_ready()
    wait_until(lambda: all((job := tq.get_job(i)) is not None
                           and job.status in ("succeeded", "failed") for i in (ok, failing)),
               30, what="both jobs finished")
    assert worker.stop() == 0
    assert calls(db, planted) == []


# -- what the catalog and the templates say -----------------------------------------------


def test_every_installed_function_has_a_fixed_search_path(
    tq: TaskQueue, db: psycopg.Connection
) -> None:
    rows = db.execute(
        """SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p
           JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = %s AND p.prokind IN ('f', 'p')""", [tq.schema]).fetchall()
    assert rows
    expected = f"search_path=pg_catalog, {tq.schema}, pg_temp"
    for function, config in rows:
        assert config is not None and expected in config, (function, config)


KEYWORDS = {
    "all", "and", "any", "array", "as", "cast", "check", "coalesce", "cube", "exists", "extract",
    "lateral",
    "filter", "from", "greatest", "grouping", "in", "into", "key", "least", "materialized",
    "not", "nullif", "on", "or", "over", "primary", "row", "rows", "select", "sets", "system",
    "table", "then", "unique", "using", "values", "when", "where", "with",
}
"""SQL syntax that looks like a call (``IN (...)``, ``coalesce(...)``): no search-path lookup."""

CALL = re.compile(r"(?<![\w.\"$])([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def templates() -> Iterator[tuple[str, str]]:
    for module_info in pkgutil.iter_modules(sql_package.__path__):
        module = importlib.import_module(f"pgtaskq.sql.{module_info.name}")
        for name, value in vars(module).items():
            if name.isupper() and not name.startswith("_") and isinstance(value, str) and re.search(
                    r"\b(SELECT|INSERT|UPDATE|DELETE|FUNCTION)\b", value):
                yield f"pgtaskq.sql.{module_info.name}.{name}", value


def unqualified_calls(statement: str) -> list[str]:
    text = re.sub(r"--[^\n]*", "", statement)          # comments
    text = re.sub(r"'(?:[^']|'')*'", "''", text)       # string literals
    found = []
    for match in CALL.finditer(text):
        before = text[: match.start()].rstrip()
        if match.group(1).lower() in KEYWORDS or re.search(r"(?i)\bAS$", before):
            continue  # syntax, or an alias's column list
        if re.search(r"(?i)\b(INTO|ON|TABLE|INDEX|AGGREGATE|FUNCTION|FROM)$", before):
            continue  # a table's column list, an index or a definition
        found.append(match.group(1))
    return found


def test_no_statement_calls_a_function_through_the_search_path() -> None:
    offenders = {where: calls for where, template in templates()
                 if (calls := unqualified_calls(render("pgtaskq", template)))}
    assert offenders == {}, (
        "call these as pg_catalog.name(...) or add them to pgtaskq.sql.BUILTIN_FUNCTIONS")


def test_several_array_unnest_becomes_rows_from() -> None:
    rendered = render("pgtaskq", "SELECT * FROM unnest(%(a)s::text[], '{{x,y}}'::text[]) "
                                 "WITH ORDINALITY AS t(a, b, i)")
    assert rendered == (
        "SELECT * FROM ROWS FROM (pg_catalog.unnest(%(a)s::text[]), "
        "pg_catalog.unnest('{x,y}'::text[])) WITH ORDINALITY AS t(a, b, i)")
