"""The dashboard as a plain WSGI application: routing, safety checks, responses.

``Dashboard(tq)`` is a WSGI callable; mount it anywhere (its links are relative to
``SCRIPT_NAME``). It serves ``pgtaskq dashboard``, the Flask blueprint and the Django view.
Plain WSGI keeps it free of any framework: the pages are a handful of routes.

Safety, in one place: every change is a POST whose CSRF token (``csrf.py``) matches its
form and this browser, else 403 and nothing happens; ``read_only`` refuses every POST;
``authorize(environ)`` can refuse anything (the Flask and Django mounts use it); responses
carry a strict Content-Security-Policy (scripts and styles only from the dashboard itself)
and may not be framed. Values from the database are escaped by ``markup.html``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote

import psycopg

from pgtaskq.cli.schedules import fetch_schedules
from pgtaskq.contrib.dashboard import csrf, data, pages
from pgtaskq.contrib.dashboard.markup import Safe, html
from pgtaskq.errors import PgtaskqError, first_line
from pgtaskq.queue import TaskQueue

StartResponse = Callable[..., Any]
Authorize = Callable[[dict[str, Any]], bool]

MAX_FORM_BYTES = 16 * 1024
STATIC_FILES = {"dashboard.css": "text/css; charset=utf-8",
                "dashboard.js": "text/javascript; charset=utf-8"}
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
     "img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
     "base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
]

JOB_ACTION = re.compile(r"^/jobs/(\d{1,18})/(retry|cancel|run-now)$")
QUEUE_ACTION = re.compile(r"^/queues/([^/]{1,100})/(pause|resume)$")
JOB_PAGE = re.compile(r"^/jobs/(\d{1,18})$")


class HTTPError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class Dashboard:
    """A WSGI app showing one TaskQueue's schema, with actions unless ``read_only``."""

    def __init__(self, tq: TaskQueue, *, read_only: bool = False, refresh: float = 5.0,
                 authorize: Authorize | None = None, page_size: int = 50) -> None:
        self.tq = tq
        self.read_only = read_only
        self.refresh = refresh
        self.authorize = authorize
        self.page_size = page_size

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET").upper()
        secret = csrf.browser_secret(environ)
        headers: list[tuple[str, str]] = []
        if secret is None:
            secret = csrf.new_secret()
            headers.append(csrf.cookie_header(
                secret, (environ.get("SCRIPT_NAME") or "") + "/",
                environ.get("wsgi.url_scheme") == "https"))
        ctx = pages.Context(base=(environ.get("SCRIPT_NAME") or "").rstrip("/"),
                            secret=secret, read_only=self.read_only, refresh=self.refresh,
                            schema=self.tq.schema)
        try:
            if self.authorize is not None and not self.authorize(environ):
                raise HTTPError("403 Forbidden", "You may not see this dashboard.")
            if path.startswith("/static/"):
                return self._static(path[len("/static/"):], start_response)
            if method in ("GET", "HEAD"):
                status, body = "200 OK", self._page(ctx, path, _query(environ))
            elif method == "POST":
                location = self._act(ctx, path, environ)
                start_response("303 See Other",
                               [("Location", location), *headers, *SECURITY_HEADERS])
                return [b""]
            else:
                raise HTTPError("405 Method Not Allowed", "Only GET and POST are served.")
        except HTTPError as exc:
            status, body = exc.status, self._error(ctx, exc.status, str(exc))
        except (PgtaskqError, psycopg.Error) as exc:
            status = "503 Service Unavailable"
            body = self._error(ctx, status, f"The database is not available: "
                                            f"{first_line(exc)}")
        payload = body.encode()
        start_response(status, [("Content-Type", "text/html; charset=utf-8"),
                                ("Content-Length", str(len(payload))), *headers,
                                *SECURITY_HEADERS])
        return [b"" if method == "HEAD" else payload]

    # -- pages --------------------------------------------------------------------------

    def _page(self, ctx: pages.Context, path: str, params: dict[str, str]) -> Safe:
        fragment = params.get("fragment") == "1"
        notice = NOTICES.get(params.get("notice", ""), "").format(
            id=params.get("id", ""), n=params.get("n", ""))
        if path == "/":
            body = pages.overview(ctx, data.snapshot(self.tq))
            title, current, refresh = "Overview", "overview", ctx.url("/?fragment=1")
        elif path == "/jobs":
            filters = {name: params.get(name) or None for name in data.FILTERS}
            if filters["status"] is not None and filters["status"] not in pages.STATUSES:
                raise HTTPError("400 Bad Request", f"unknown status {filters['status']!r}")
            before = _int(params.get("before"), "before")
            page = data.jobs_page(self.tq, filters, before, self.page_size)
            body = pages.jobs(ctx, page.jobs, filters, page.older, page.scanned_to)
            title, current, refresh = "Jobs", "jobs", None
        elif (match := JOB_PAGE.match(path)) is not None:
            job = self.tq.get_job(int(match.group(1)))
            if job is None:
                raise HTTPError("404 Not Found", f"No job with id {match.group(1)}.")
            body = pages.job(ctx, job)
            title, current, refresh = f"Job {job.id}", "jobs", None
        elif path == "/workers":
            body = pages.workers(ctx, data.snapshot(self.tq))
            title, current, refresh = "Workers", "workers", ctx.url("/workers?fragment=1")
        elif path == "/schedules":
            body = pages.schedules(ctx, fetch_schedules(self.tq))
            title, current, refresh = "Schedules", "schedules", None
        else:
            raise HTTPError("404 Not Found", "No such page.")
        if fragment:
            return body
        return pages.layout(ctx, title, body, current=current, notice=notice,
                            refresh_url=refresh)

    def _error(self, ctx: pages.Context, status: str, message: str) -> Safe:
        return pages.layout(ctx, status, html('<h1>{s}</h1><p>{m}</p>', s=status, m=message),
                            current="")

    def _static(self, name: str, start_response: StartResponse) -> Iterable[bytes]:
        if name not in STATIC_FILES:
            raise HTTPError("404 Not Found", "No such file.")
        payload = resources.files(__package__).joinpath("static", name).read_bytes()
        start_response("200 OK", [("Content-Type", STATIC_FILES[name]),
                                  ("Content-Length", str(len(payload))),
                                  ("Cache-Control", "max-age=300"),
                                  ("X-Content-Type-Options", "nosniff")])
        return [payload]

    # -- actions ------------------------------------------------------------------------

    def _act(self, ctx: pages.Context, path: str, environ: dict[str, Any]) -> str:
        """Check and run one POSTed action; return where to send the browser."""
        form = _form(environ)
        if self.read_only:
            raise HTTPError("403 Forbidden", "This dashboard is read-only.")
        if not csrf.accepted(environ, path, form.get(csrf.FIELD)):
            raise HTTPError("403 Forbidden", "The form's security token is missing or does "
                            "not match (reload the page and try again). Nothing was changed.")
        tq = self.tq
        if (match := JOB_ACTION.match(path)) is not None:
            job_id, verb = int(match.group(1)), match.group(2)
            try:
                done = {"retry": tq.retry, "cancel": tq.cancel, "run-now": tq.run_now}[verb](job_id)
            except PgtaskqError:  # retry refused: its dedupe key is taken again
                done = False
            code = verb.replace("-", "_") + ("" if done else "_refused")
            return ctx.url(f"/jobs/{job_id}?notice={code}&id={job_id}")
        if (match := QUEUE_ACTION.match(path)) is not None:
            queue, verb = match.group(1), match.group(2)
            try:
                changed = tq.pause(queue) if verb == "pause" else tq.resume(queue)
            except ValueError as exc:
                raise HTTPError("400 Bad Request", first_line(exc)) from exc
            code = (f"{verb}d" if changed else f"{verb}_unchanged")
            return ctx.url(f"/?notice={code}&id={quote(queue)}")
        if path == "/tasks/retry-failed":
            task = form.get("task") or ""
            try:
                count = tq.retry_failed(task)
            except ValueError as exc:
                raise HTTPError("400 Bad Request", first_line(exc)) from exc
            return ctx.url(f"/?notice=retried_many&id={quote(task)}&n={count}")
        raise HTTPError("404 Not Found", "No such action.")


NOTICES = {
    "retry": "Job {id} queued again.",
    "retry_refused": "Job {id} was not retried: it is not failed or cancelled, or another "
                     "job holds its dedupe key.",
    "cancel": "Job {id}: cancelled (a running job is asked to stop).",
    "cancel_refused": "Job {id} was not cancelled: it has already finished.",
    "run_now": "Job {id} is runnable now.",
    "run_now_refused": "Job {id} is not a delayed queued job.",
    "paused": "Queue {id} paused: workers no longer claim its jobs.",
    "pause_unchanged": "Queue {id} was already paused.",
    "resumed": "Queue {id} resumed.",
    "resume_unchanged": "Queue {id} was not paused.",
    "retried_many": "{n} failed jobs of {id} queued again.",
}


def _query(environ: dict[str, Any]) -> dict[str, str]:
    parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {key: values[-1] for key, values in parsed.items()}


def _form(environ: dict[str, Any]) -> dict[str, str]:
    """The urlencoded body of a POST (at most ``MAX_FORM_BYTES``)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_FORM_BYTES:
        raise HTTPError("413 Content Too Large", "The form is too large.")
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[-1] for key, values in parsed.items()}


def _int(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)  # type: ignore[arg-type]
    except ValueError:
        raise HTTPError("400 Bad Request", f"{name} must be a whole number") from None
    if not 0 < number < 2**63:
        raise HTTPError("400 Bad Request", f"{name} is out of range")
    return number
