"""Every SQL statement pgtaskq runs lives in this package, one module per table.

Statements are templates with a ``{schema}`` placeholder. :func:`render` fills it with a
quoted identifier through :mod:`psycopg.sql` (never ``str.format``) and caches the text, so
each statement is composed once per schema. The rendered text uses ``%(name)s`` parameters,
which psycopg 3, psycopg2 and Django cursors all accept: callers may hand pgtaskq any of
those connections and the same statement runs in the caller's transaction.

Templates must not contain a bare ``%`` (parameters use ``%(name)s``) and must double the
braces of literal ``{}`` (for example an empty array literal is written ``'{{}}'``).
"""

from __future__ import annotations

import functools
import re

from psycopg import sql

from pgtaskq.errors import ConfigurationError

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
    composed = sql.SQL(template).format(schema=sql.Identifier(schema))
    return composed.as_string(None)
