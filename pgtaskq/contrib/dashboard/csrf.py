"""CSRF protection without server-side sessions: a per-browser secret and per-form tokens.

The first page a browser gets sets a random secret in an HttpOnly, SameSite=Strict cookie.
Every form carries a token: the HMAC of its own action (method and path) keyed with that
secret, so a token is tied to the page's form and useless for any other action. A POST is
accepted only when its token matches the cookie's secret and, when the browser sends an
``Origin`` header, that origin is this host. A cross-site page can neither read the cookie
nor the token (and a strict cookie is not even sent with its request), so its POST changes
nothing. No server secret is needed, so any number of processes can serve one dashboard.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

COOKIE = "pgtaskq_csrf"
FIELD = "csrf_token"


def browser_secret(environ: dict[str, Any]) -> str | None:
    """The secret of the browser's cookie, or None."""
    try:
        cookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
    except CookieError:
        return None
    morsel = cookie.get(COOKIE)
    value = morsel.value if morsel is not None else ""
    return value if len(value) == 43 else None  # token_urlsafe(32)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def cookie_header(secret: str, path: str, secure: bool) -> tuple[str, str]:
    """The ``Set-Cookie`` header that gives the browser its secret."""
    attributes = [f"{COOKIE}={secret}", f"Path={path or '/'}", "HttpOnly", "SameSite=Strict"]
    if secure:
        attributes.append("Secure")
    return "Set-Cookie", "; ".join(attributes)


def token(secret: str, action: str) -> str:
    """The token of a form posting to ``action`` (its path below the dashboard's root)."""
    return hmac.new(secret.encode(), f"POST {action}".encode(), hashlib.sha256).hexdigest()


def same_origin(environ: dict[str, Any]) -> bool:
    """False when the browser says the request comes from another origin."""
    origin = environ.get("HTTP_ORIGIN")
    if origin is None:  # not every browser sends it on same-origin POSTs
        referer = environ.get("HTTP_REFERER")
        if referer is None:
            return True
        origin = referer
    if origin == "null":
        return False
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    return urlsplit(origin).netloc == host


def accepted(environ: dict[str, Any], action: str, form_token: str | None) -> bool:
    """Whether a POST to ``action`` carries this browser's token and is same-origin."""
    secret = browser_secret(environ)
    if secret is None or not form_token or not same_origin(environ):
        return False
    return hmac.compare_digest(token(secret, action), form_token)
