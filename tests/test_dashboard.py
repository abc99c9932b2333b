"""The web dashboard over a real WSGI server and a real database: pages, safety, actions.

Requests go through ``http.client`` to the dashboard served on a loopback port, cookie and
all, as a browser would send them; the browser itself is in ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from urllib.parse import urlencode

import psycopg
import pytest

from pgtaskq import TaskQueue
from pgtaskq.contrib.dashboard import Dashboard
from pgtaskq.contrib.dashboard.serve import make
from pgtaskq.testing import wait_until


class Browser:
    """Just enough of a browser: keeps the dashboard's cookie, follows nothing."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = ""

    def request(self, method: str, path: str, body: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
        if self.cookie:
            sent.setdefault("Cookie", self.cookie)
        data = None
        if body is not None:
            data = urlencode(body)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        text = response.read().decode()
        got = {k.lower(): v for k, v in response.getheaders()}
        if "set-cookie" in got:
            self.cookie = got["set-cookie"].split(";")[0]
        conn.close()
        return response.status, got, text

    def get(self, path: str) -> str:
        status, _, text = self.request("GET", path)
        assert status == 200, text
        return text

    def submit(self, page: str, action: str, **extra: str) -> tuple[int, dict[str, str]]:
        """POST the form of ``page`` whose action is ``action``, with its own token."""
        match = re.search(r'<form method="post" action="' + re.escape(action)
                          + r'"[^>]*><input type="hidden" name="csrf_token" value="(\w+)"',
                          page)
        assert match, f"no form for {action}"
        status, headers, _ = self.request(
            "POST", action, {"csrf_token": match.group(1), **extra},
            {"Origin": f"http://127.0.0.1:{self.port}"})
        return status, headers


def serve(app: Dashboard) -> Iterator[int]:
    server = make(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def browser(tq: TaskQueue) -> Iterator[Browser]:
    for port in serve(Dashboard(tq, refresh=0)):
        yield Browser(port)


@pytest.fixture
def read_only_browser(tq: TaskQueue) -> Iterator[Browser]:
    for port in serve(Dashboard(tq, read_only=True)):
        yield Browser(port)


def fail_job(db: psycopg.Connection, tq: TaskQueue, job_id: int, error: str) -> None:
    """Finish a leased job as failed, in SQL, as a worker's acknowledgement leaves it."""
    db.execute(f"""
        WITH gone AS (DELETE FROM "{tq.schema}".jobs WHERE id = %s RETURNING *)
        INSERT INTO "{tq.schema}".job_history
            (id, queue, task, args, kwargs, status, priority, run_at, attempts, max_attempts,
             dedupe_key, created_at, started_at, finished_at, last_error)
        SELECT id, queue, task, args, kwargs, 'failed', priority, run_at, 1, max_attempts,
               dedupe_key, created_at, now(), now(), %s FROM gone""", (job_id, error))


def test_overview_counts_per_queue_and_pause(browser: Browser, tq: TaskQueue) -> None:
    tq.enqueue_many("mail.send", [{"queue": "mail"}] * 3)
    tq.enqueue_many("report.build", [{"queue": "reports"}] * 2)
    tq.enqueue("report.build", queue="reports", delay=3600)
    page = browser.get("/")
    mail = re.search(r'data-queue="mail">.*?</section>', page, re.S).group(0)
    reports = re.search(r'data-queue="reports">.*?</section>', page, re.S).group(0)
    assert '<dd class="ready">3</dd>' in mail
    assert '<dd class="ready">2</dd>' in reports
    assert '<dd class="scheduled">1</dd>' in reports
    assert "<svg" in mail  # the charts are drawn on the server
    status, headers = browser.submit(page, "/queues/mail/pause")
    assert (status, headers["location"]) == (303, "/?notice=paused&id=mail")
    assert list(tq.paused_queues()) == ["mail"]
    page = browser.get("/?notice=paused&id=mail")
    assert "Queue mail paused" in page
    assert re.search(r'data-queue="mail">.*?badge">paused<', page, re.S)
    browser.submit(page, "/queues/mail/resume")
    assert tq.paused_queues() == {}
    fragment = browser.get("/?fragment=1")  # what the page's script refreshes with
    assert fragment.startswith("<p") and "<html" not in fragment and 'data-queue="mail"' in fragment


def test_values_from_the_database_are_escaped(browser: Browser, tq: TaskQueue,
                                              db: psycopg.Connection) -> None:
    evil = "<script>alert(1)</script>"
    job_id = tq.enqueue("x<i>task", args=[evil],
                        kwargs={"k": '"><img src=x onerror=alert(2)>'})
    db.execute(f'UPDATE "{tq.schema}".jobs SET last_error = %s WHERE id = %s',
               ("Traceback\n  <iframe src=//evil>\nValueError: <b>bad</b>", job_id))
    for path in (f"/jobs/{job_id}", "/jobs", "/", f"/jobs?q={evil}"):
        page = browser.get(path)
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "<iframe" not in page and "<b>bad" not in page and "x<i>" not in page
    page = browser.get(f"/jobs/{job_id}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;iframe src=//evil&gt;" in page


def test_post_without_a_valid_token_changes_nothing(browser: Browser, tq: TaskQueue,
                                                    db: psycopg.Connection) -> None:
    job_id = tq.enqueue("x.task")
    fail_job(db, tq, job_id, "boom")
    page = browser.get(f"/jobs/{job_id}")
    origin = {"Origin": f"http://127.0.0.1:{browser.port}"}
    # no token; a token of another form; the right token from another site; no cookie
    token = re.search(r'name="csrf_token" value="(\w+)"', page).group(1)
    attempts = [
        ({}, origin, browser.cookie),
        ({"csrf_token": "0" * 64}, origin, browser.cookie),
        ({"csrf_token": token}, {"Origin": "http://evil.example"}, browser.cookie),
        ({"csrf_token": token}, {"Referer": "http://evil.example/page"}, browser.cookie),
        ({"csrf_token": token}, origin, ""),
    ]
    mine = browser.cookie
    for body, headers, cookie in attempts:
        status, _, text = browser.request("POST", f"/jobs/{job_id}/retry", body,
                                          {**headers, "Cookie": cookie})
        browser.cookie = mine  # the cookie-less request was given a new secret
        assert status == 403, (body, headers, text)
        assert "Nothing was changed" in text
    # the retry token does not cancel, nor pause
    status, _, _ = browser.request("POST", f"/jobs/{job_id}/cancel", {"csrf_token": token},
                                   origin)
    assert status == 403
    assert tq.get_job(job_id).status == "failed"  # type: ignore[union-attr]
    status, headers = browser.submit(page, f"/jobs/{job_id}/retry")
    assert status == 303 and headers["location"] == f"/jobs/{job_id}?notice=retry&id={job_id}"
    assert tq.get_job(job_id).status == "queued"  # type: ignore[union-attr]


def test_read_only_shows_no_action_and_refuses_posts(read_only_browser: Browser,
                                                     tq: TaskQueue,
                                                     db: psycopg.Connection) -> None:
    job_id = tq.enqueue("x.task", queue="mail")
    fail_job(db, tq, job_id, "boom")
    tq.enqueue("x.task", queue="mail")
    for path in ("/", f"/jobs/{job_id}", "/jobs"):
        assert 'method="post"' not in read_only_browser.get(path)
    status, _, text = read_only_browser.request("POST", f"/jobs/{job_id}/retry", {},
                                                {"Origin": "http://127.0.0.1"})
    assert status == 403 and "read-only" in text
    assert tq.get_job(job_id).status == "failed"  # type: ignore[union-attr]


def test_job_page_actions_run_now_cancel_and_bulk_retry(browser: Browser, tq: TaskQueue,
                                                         db: psycopg.Connection) -> None:
    later = tq.enqueue("x.task", delay=3600)
    page = browser.get(f"/jobs/{later}")
    assert browser.submit(page, f"/jobs/{later}/run-now")[0] == 303
    job = tq.get_job(later)
    assert job is not None and job.status == "queued"
    (due,) = db.execute(f'SELECT run_at <= now() FROM "{tq.schema}".jobs WHERE id = %s',
                        (later,)).fetchone()
    assert due
    page = browser.get(f"/jobs/{later}")
    assert "run-now" not in page
    browser.submit(page, f"/jobs/{later}/cancel")
    assert tq.get_job(later).status == "cancelled"  # type: ignore[union-attr]

    failed = [tq.enqueue("bulk.task", args=[i]) for i in range(3)]
    keep = tq.enqueue("other.task")
    for job_id in [*failed, keep]:
        fail_job(db, tq, job_id, "boom")
    db.execute(f'INSERT INTO "{tq.schema}".stats_minute (minute, queue, task, failed) '
               "VALUES (date_trunc('minute', now()), 'default', 'bulk.task', 3)")
    page = browser.get("/")
    _, headers = browser.submit(page, "/tasks/retry-failed", task="bulk.task")
    assert headers["location"] == "/?notice=retried_many&id=bulk.task&n=3"
    assert [tq.get_job(i).status for i in failed] == ["queued"] * 3  # type: ignore[union-attr]
    assert tq.get_job(keep).status == "failed"  # type: ignore[union-attr]
    assert "3 failed jobs of bulk.task queued again" in browser.get(headers["location"])


def test_jobs_list_filters_and_pages_by_key(browser: Browser, tq: TaskQueue,
                                            db: psycopg.Connection) -> None:
    ids = tq.enqueue_many("a.task", [{"args": [i], "queue": "q1" if i % 2 else "q2"}
                                     for i in range(120)])
    odd = tq.enqueue("b.task", args=["100% literal_"], queue="q1")
    fail_job(db, tq, ids[5], "KeyError: 'needle'")

    def listed(path: str) -> tuple[list[int], str | None]:
        page = browser.get(path)
        found = [int(i) for i in re.findall(r'<tr class="\w+"><td><a href="/jobs/(\d+)"', page)]
        more = re.search(r'<a rel="next" href="([^"]+)"', page)
        return found, more.group(1).replace("&amp;", "&") if more else None

    seen: list[int] = []
    path: str | None = "/jobs"
    while path is not None:
        found, path = listed(path)
        seen += found
    assert seen == sorted([*ids, odd], reverse=True)
    assert listed("/jobs?queue=q2")[0] == sorted(ids[0::2], reverse=True)[:50]
    assert listed("/jobs?status=failed")[0] == [ids[5]]
    assert listed("/jobs?q=needle")[0] == [ids[5]]
    assert listed("/jobs?q=100%25+literal_")[0] == [odd]
    assert listed("/jobs?q=1%250")[0] == []  # % is no wildcard
    assert listed("/jobs?task=b.task&status=queued")[0] == [odd]
    status, _, _ = browser.request("GET", "/jobs?status=bogus")
    assert status == 400


def test_workers_schedules_and_unknown_pages(browser: Browser, tq: TaskQueue) -> None:
    assert "No worker registered" in browser.get("/workers")
    assert "No schedule registered" in browser.get("/schedules")
    assert browser.request("GET", "/jobs/999999")[0] == 404
    assert browser.request("GET", "/nope")[0] == 404
    assert browser.request("GET", "/static/../app.py")[0] == 404
    status, headers, _ = browser.request("GET", "/static/dashboard.css")
    assert status == 200 and headers["content-type"].startswith("text/css")
    _, headers, _ = Browser(browser.port).request("GET", "/")  # a first visit
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]


def test_cli_serves_on_loopback(pgtaskq_dsn: str, tq: TaskQueue) -> None:
    tq.enqueue("x.task", queue="cli")
    process = subprocess.Popen(
        [sys.executable, "-m", "pgtaskq", "--dsn", pgtaskq_dsn, "--schema", tq.schema,
         "dashboard", "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()  # type: ignore[union-attr]
        match = re.search(r"on http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        page = wait_until(lambda: Browser(int(match.group(1))).get("/"), 10)
        assert 'data-queue="cli"' in page
    finally:
        process.terminate()
        process.wait(10)
