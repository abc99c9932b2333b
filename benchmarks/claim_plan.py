"""The plan of the worker's claim, as the worker's own call runs it (a diagnostic).

Since schema version 2 the claim is the PL/pgSQL function ``claim_jobs``, so ``EXPLAIN`` of
the worker's statement shows a Function Scan and nothing of the query inside. PostgreSQL's
``auto_explain`` module, loaded for one transaction that is then rolled back, reports the
inner query's plan with the settings the function applies itself (sorts and bitmap scans
off), so nothing is leased and what is shown is what the worker gets.

Loading ``auto_explain`` needs a superuser, or the module in ``session_preload_libraries``.
The tests and the benchmarks use this to check the claim's plan on a real table; it is
not shipped with pgtaskq (only they use it).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from pgtaskq.sql import render
from pgtaskq.sql import worker as worker_sql

EXPLAIN_NESTED_STATEMENTS = """
LOAD 'auto_explain';
SET LOCAL auto_explain.log_min_duration = 0;
SET LOCAL auto_explain.log_analyze = on;
SET LOCAL auto_explain.log_buffers = on;
SET LOCAL auto_explain.log_nested_statements = on;
SET LOCAL auto_explain.log_level = notice
"""
"""Report the plan of every statement, and of those run inside functions, to the client
(``explain_claim``)."""

EXPLAIN_FORMAT = "SELECT set_config('auto_explain.log_format', %(format)s, true)"


def explain_claim(
    conn: psycopg.Connection, schema: str, *, tasks: list[str], queues: list[str] | None = None,
    limit: int = 10, fmt: str = "json",
) -> Any:
    """Run the worker's claim in a rolled-back transaction and return its inner plan.

    ``fmt="json"``: the plan as a dict (``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)``'s
    ``Plan``); ``fmt="text"``: the text EXPLAIN prints. ``conn`` must not be in a
    transaction.
    """
    if fmt not in ("json", "text"):
        raise ValueError(f"fmt must be 'json' or 'text', not {fmt!r}")
    notices: list[str] = []

    def collect(diagnostic: psycopg.errors.Diagnostic) -> None:
        if diagnostic.message_primary:
            notices.append(diagnostic.message_primary)

    conn.add_notice_handler(collect)
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(EXPLAIN_NESTED_STATEMENTS)
            conn.execute(EXPLAIN_FORMAT, {"format": fmt})
            conn.execute(render(schema, worker_sql.CLAIM), {
                "worker_id": 0, "tasks": tasks, "queues": queues, "limit": limit,
                "lease": 60.0, "claimers": 0}).fetchall()
    finally:
        conn.remove_notice_handler(collect)
    # auto_explain's message is "duration: ... ms  plan:\n<plan>"; the claim's own query is
    # the one that leases (the other is the outer SELECT of the function call)
    plans = [notice.split("plan:\n", 1)[1] for notice in notices if "plan:\n" in notice]
    inner = [plan for plan in plans if "candidates" in plan]
    if not inner:
        raise RuntimeError(f"auto_explain reported no plan of the claim (got {notices!r})")
    if fmt == "text":
        return inner[0]
    return json.loads(inner[0])["Plan"]
