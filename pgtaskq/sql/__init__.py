"""pgtaskq's SQL statements, one module per part of pgtaskq that runs them.

``jobs`` (enqueue and the job API), ``queues`` (pause, resume), ``worker`` (claim,
complete, heartbeat, rescue, hand back), ``registry`` (workers, their tasks, parking),
``history`` (retention), ``cron``, ``stats``, ``metrics``, ``dashboard`` and ``admin``
(readers), ``fragments`` (pieces several statements share) and ``migrations`` (the schema
itself).
A few statements are composed where they run, because their SQL is an identifier or a
role rather than data: the worker's ``VACUUM`` (``pgtaskq.worker.vacuum``), ``LISTEN``
(``pgtaskq.worker.listener``) and the grants (``pgtaskq.grants``); the OpenTelemetry
integration keeps its two statements beside it (``pgtaskq.contrib.opentelemetry``).

Statements are templates with a ``{schema}`` placeholder. :func:`render` fills it with a
quoted identifier through :mod:`psycopg.sql` (never ``str.format``) and caches the text, so
each statement is composed once per schema. The rendered text uses ``%(name)s`` parameters,
which psycopg 3, psycopg2 and Django cursors all accept: callers may hand pgtaskq any of
those connections and the same statement runs in the caller's transaction.

Templates must not contain a bare ``%`` (parameters use ``%(name)s``) and must double the
braces of literal ``{}`` (for example an empty array literal is written ``'{{}}'``).

Built-in functions are called as ``pg_catalog.f(...)`` in every rendered statement, whatever
the template says: statements run on the caller's connection (``conn=``) and on the
worker's, with whatever ``search_path`` those have, and an unqualified call resolves
through it. A role that can create objects in a schema on that path (anyone in ``public``
before PostgreSQL 15) could define ``public.unnest(text[])``, which beats the polymorphic
``pg_catalog.unnest(anyarray)`` and would run, as the caller, inside every claim and bulk
enqueue, seeing every job's arguments. Templates stay readable (``now()``); ``render``
qualifies the names in :data:`BUILTIN_FUNCTIONS`, and a test fails on any unqualified call
of a name missing from it. Functions pgtaskq installs also pin their own ``search_path``.
"""

from __future__ import annotations

import functools
import re

from psycopg import sql

from pgtaskq.errors import ConfigurationError

BUILTIN_FUNCTIONS = frozenset({
    "age", "array_agg", "array_fill", "array_length", "array_position", "array_remove", "avg",
    "bool_and", "bool_or", "cardinality", "clock_timestamp", "concat", "concat_ws", "count",
    "current_database", "current_setting", "date_trunc", "floor", "format", "generate_series",
    "hashtext", "hashtextextended", "jsonb_agg", "jsonb_array_elements", "jsonb_build_array",
    "jsonb_build_object", "jsonb_path_query_array", "jsonb_typeof", "left", "length", "lower",
    "make_interval", "max", "min", "nextval", "now",
    "octet_length", "pg_advisory_lock", "pg_advisory_unlock", "pg_advisory_xact_lock",
    "pg_backend_pid", "pg_get_serial_sequence", "pg_notify", "pg_relation_size",
    "pg_sequence_last_value", "pg_stat_get_dead_tuples", "pg_stat_get_last_autovacuum_time",
    "pg_stat_get_last_vacuum_time", "pg_stat_get_live_tuples", "pg_try_advisory_lock",
    "pg_try_advisory_xact_lock", "power", "random", "round", "row_number", "set_config", "setval",
    "statement_timestamp", "string_agg", "sum", "to_jsonb", "to_regclass", "txid_current_snapshot",
    "txid_snapshot_xip", "txid_status", "unnest", "upper",
})
"""Functions of ``pg_catalog`` that templates call; :func:`render` qualifies each call."""

_UNQUALIFIED_BUILTIN = re.compile(
    r"(?<![\w.\"$])(" + "|".join(sorted(BUILTIN_FUNCTIONS, key=len, reverse=True))
    + r")(?=\s*\()",
    re.IGNORECASE,
)

SCHEMA_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,49}")


def validate_schema_name(name: object) -> str:
    """Return ``name`` if it is a safe schema name, else raise ``ConfigurationError``.

    Names are limited to lowercase letters, digits and ``_`` (at most 50 characters, not
    starting with ``pg_``) so that the derived NOTIFY channel stays a valid identifier and
    nothing needs case-sensitive quoting in operators' psql sessions.
    """
    if not isinstance(name, str) or not SCHEMA_NAME_RE.fullmatch(name) or name.startswith("pg_"):
        raise ConfigurationError(
            f"invalid schema name {name!r}: use 1-50 lowercase letters, digits or '_', "
            "starting with a letter or '_' and not with 'pg_'"
        )
    return name


def channel_name(schema: str) -> str:
    """The NOTIFY channel of a schema: workers of other schemas never wake for it."""
    return f"{schema}_events"


@functools.lru_cache(maxsize=1024)
def render(schema: str, template: str) -> str:
    """Compose ``template`` for ``schema`` and return it as text (cached)."""
    validate_schema_name(schema)
    composed = sql.SQL(qualify_builtins(template)).format(schema=sql.Identifier(schema))
    return composed.as_string(None)


def qualify_builtins(template: str) -> str:
    """``template`` with every call of a :data:`BUILTIN_FUNCTIONS` name made
    ``pg_catalog.name(...)`` (the search path of the session then does not matter).

    ``unnest(a, b)`` becomes ``ROWS FROM (pg_catalog.unnest(a), pg_catalog.unnest(b))``,
    what PostgreSQL makes of it: only an unqualified ``unnest`` takes several arrays, and
    it then looks each ``unnest`` up on the search path.
    """
    return _UNQUALIFIED_BUILTIN.sub(r"pg_catalog.\1", _split_multi_unnest(template))


_UNNEST_CALL = re.compile(r"(?<![\w.\"$])unnest\s*\(", re.IGNORECASE)


def _split_multi_unnest(template: str) -> str:
    out: list[str] = []
    position = 0
    for match in _UNNEST_CALL.finditer(template):
        if match.start() < position:
            continue  # inside an unnest already rewritten
        arguments, end = _arguments(template, match.end())
        if len(arguments) < 2:
            continue
        out.append(template[position:match.start()])
        out.append("ROWS FROM (" + ", ".join(
            f"unnest({_split_multi_unnest(argument.strip())})" for argument in arguments) + ")")
        position = end
    out.append(template[position:])
    return "".join(out)


def _arguments(text: str, start: int) -> tuple[list[str], int]:
    """The top-level comma-separated arguments of the call whose ``(`` ends just before
    ``start``, and the index after its ``)`` (quotes and nested parentheses skipped)."""
    depth, quote, begin = 0, "", start
    arguments: list[str] = []
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "([":
            depth += 1
        elif char in ")]":
            if depth == 0:
                arguments.append(text[begin:index])
                return arguments, index + 1
            depth -= 1
        elif char == "," and depth == 0:
            arguments.append(text[begin:index])
            begin = index + 1
    raise ValueError("unbalanced parentheses in an SQL template")
