"""Keep database passwords out of every message pgtaskq prints, logs or raises.

libpq quotes the part of a connection string it could not parse, and a malformed URI comes
back whole (``postgresql://app:S3cret@[::1``): echoing that in a CLI error, a worker's log
or an exception puts the password on screens, in log shippers and in bug reports. Two
layers: patterns that mask what looks like a password anywhere in a text (a URI's userinfo,
``password=...``), and, where the DSN is known, every password spelled in that DSN, so a
fragment libpq quotes out of context is masked too.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

MASK = "***"

_URI_PASSWORD = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^\s:/@\"'?#]*:)(?P<secret>[^\s\"']*)(?=@)",
    re.IGNORECASE,
)
"""``scheme://user:SECRET@``: greedy up to the last ``@`` of the token."""

_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'?|[^\s&\"']+)",
    re.IGNORECASE,
)
"""``password=SECRET`` in a key/value string or a URI's query, quoted or not."""

_MISSPELT_PASSWORD = re.compile(r"\bpassword\s+(?P<secret>'[^']*'?|[^\s=']+)", re.IGNORECASE)
"""``password SECRET``: a DSN missing its ``=``, which libpq then quotes as a key."""


def passwords_in(dsn: str | None) -> list[str]:
    """Every spelling of a password written in ``dsn`` (raw, URL-decoded, unquoted)."""
    if not dsn:
        return []
    found: set[str] = set()
    for pattern in (_URI_PASSWORD, _KEYWORD_PASSWORD, _MISSPELT_PASSWORD):
        for match in pattern.finditer(dsn):
            secret = match.group("secret")
            for spelling in (secret, unquote(secret), secret.strip("'")):
                if spelling:
                    found.add(spelling)
    return sorted(found, key=len, reverse=True)


def redact(text: str, dsn: str | None = None) -> str:
    """``text`` with every password masked: those that look like one, and ``dsn``'s."""
    text = _URI_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    text = _KEYWORD_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    for secret in passwords_in(dsn):
        text = text.replace(secret, MASK)
    return text


def masked_dsn(dsn: str) -> str:
    """``dsn`` fit to print: its password, if it has one, replaced by ``***``."""
    return redact(dsn, dsn)
