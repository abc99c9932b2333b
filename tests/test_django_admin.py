"""The Django admin's job pages and the dashboard's include(), in examples/django_project
under real gunicorn: a staff user signs in through the admin's login form, retries a
failed job with an admin action, and opens the dashboard that anonymous users cannot.
The list filters' choices come from indexes and registries, never from the whole table."""

from __future__ import annotations

import contextlib
import html
import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql
from test_dashboard import fail_job
from test_django_example import PROJECT, app_schema, manage  # noqa: F401
from webapps import Service, start_gunicorn

from pgtaskq import TaskQueue
from pgtaskq.testing import wait_until


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


def test_staff_retry_from_the_admin_and_open_the_dashboard(pgtaskq_dsn, tq, db,
                                                           app_schema):  # noqa: F811
    env = {"PGTASKQ_DSN": pgtaskq_dsn, "PGTASKQ_SCHEMA": tq.schema,
           "APP_DB_SCHEMA": app_schema, "DJANGO_SETTINGS_MODULE": "project.settings",
           "DJANGO_SUPERUSER_USERNAME": "ops", "DJANGO_SUPERUSER_PASSWORD": "s3cret-pass",
           "DJANGO_SUPERUSER_EMAIL": "ops@example.com"}
    for args in (("migrate", "--noinput"), ("createsuperuser", "--noinput")):
        done = manage(env, *args)
        assert done.returncode == 0, done.stderr
    failed = tq.enqueue("accounts.tasks.send_welcome", args=[1], queue="emails")
    fail_job(db, tq, failed, "Traceback ...\nRuntimeError: <b>smtp down</b>")
    live = tq.enqueue("accounts.tasks.send_welcome", args=[2], queue="emails", delay=3600)
    server, base = start_gunicorn("project.wsgi", PROJECT, env)
    try:
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        anonymous = urllib.request.build_opener(NoRedirect)
        try:
            anonymous.open(base + "/pgtaskq/")
            raise AssertionError("the dashboard answered an anonymous user")
        except urllib.error.HTTPError as exc:
            assert exc.code == 302 and "/admin/login/" in exc.headers["Location"]

        def csrf(page: str) -> str:
            return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)

        def post(path: str, fields: dict, page: str) -> str:
            data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": csrf(page)})
            request = urllib.request.Request(base + path, data=data.encode(),
                                             headers={"Referer": base + path})
            return browser.open(request).read().decode()

        login = browser.open(base + "/admin/login/").read().decode()
        post("/admin/login/?next=/admin/",
             {"username": "ops", "password": "s3cret-pass", "next": "/admin/"}, login)

        finished = browser.open(base + "/admin/pgtaskq/finishedjob/?status=failed").read()
        page = finished.decode()
        assert f">{failed}<" in page and "&lt;b&gt;smtp down&lt;/b&gt;" in page
        assert "retry_jobs" in page
        done = post("/admin/pgtaskq/finishedjob/",
                    {"action": "retry_jobs", "_selected_action": str(failed), "index": "0"},
                    page)
        assert "1 job(s) queued again" in done
        assert tq.get_job(failed).status == "queued"  # type: ignore[union-attr]

        page = browser.open(base + "/admin/pgtaskq/job/?queue=emails").read().decode()
        assert f">{live}<" in page and f">{failed}<" in page
        assert "/admin/pgtaskq/job/add/" not in page  # read-only
        done = post("/admin/pgtaskq/job/",
                    {"action": "cancel_jobs", "_selected_action": str(live), "index": "0"},
                    page)
        assert "1 job(s) cancelled" in done
        assert tq.get_job(live).status == "cancelled"  # type: ignore[union-attr]

        dashboard = browser.open(base + "/pgtaskq/").read().decode()
        assert 'data-queue="emails"' in dashboard
        assert 'href="/pgtaskq/jobs?queue=emails"' in dashboard
    finally:
        server.stop()


class Admin:
    """A staff user signed in to the example project's admin under gunicorn."""

    def __init__(self, server: Service, base: str, app_name: str) -> None:
        self.server, self.base, self.app_name = server, base, app_name
        jar = http.cookiejar.CookieJar()
        self.browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def get(self, path: str) -> str:
        try:
            return self.browser.open(self.base + path).read().decode()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{path}: {exc}\n{self.server.output()[-6000:]}") from exc

    def sign_in(self) -> None:
        login = self.get("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login).group(1)
        data = urllib.parse.urlencode({"username": "ops", "password": "s3cret-pass",
                                       "next": "/admin/", "csrfmiddlewaretoken": token})
        request = urllib.request.Request(self.base + "/admin/login/?next=/admin/",
                                         data=data.encode(),
                                         headers={"Referer": self.base + "/admin/login/"})
        assert "Log out" in self.browser.open(request).read().decode()


@contextlib.contextmanager
def signed_in_admin(pgtaskq_dsn: str, tq: TaskQueue, app_schema: str) -> Iterator[Admin]:  # noqa: F811
    # The app's connections carry this name, so a test can wait until they have closed
    # (Django closes its connection after each request) and their statistics are flushed.
    app_name = f"admin-{uuid.uuid4().hex[:8]}"
    env = {"PGTASKQ_DSN": pgtaskq_dsn, "PGTASKQ_SCHEMA": tq.schema,
           "APP_DB_SCHEMA": app_schema, "DJANGO_SETTINGS_MODULE": "project.settings",
           "DJANGO_SUPERUSER_USERNAME": "ops", "DJANGO_SUPERUSER_PASSWORD": "s3cret-pass",
           "DJANGO_SUPERUSER_EMAIL": "ops@example.com", "PGAPPNAME": app_name}
    for args in (("migrate", "--noinput"), ("createsuperuser", "--noinput")):
        done = manage(env, *args)
        assert done.returncode == 0, done.stderr
    server, base = start_gunicorn("project.wsgi", PROJECT, env)
    try:
        admin = Admin(server, base, app_name)
        admin.sign_in()
        yield admin
    finally:
        server.stop()


def filter_choices(page: str, parameter: str) -> set[str]:
    """The values the page's list filter ``parameter`` offers (links ``?parameter=value``)."""
    links = re.findall(r'href="\?([^"]*)"', page)
    return {value for link in links
            for name, value in urllib.parse.parse_qsl(html.unescape(link))
            if name == parameter}


def listed_ids(page: str) -> set[int]:
    return {int(i) for i in re.findall(r'name="_selected_action" value="(\d+)"', page)}


def rows_read(db: psycopg.Connection, admin: Admin, table: str) -> int:
    """Rows of ``table`` read so far by every backend, once the app's connections closed."""
    wait_until(lambda: db.execute(
        "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = %s",
        (admin.app_name,)).fetchone()[0], 10, what="the app's connections to close")
    db.execute("SELECT pg_stat_force_next_flush()")
    return db.execute(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
        "FROM pg_stat_user_tables WHERE relid = %s::regclass", (table,)).fetchone()[0]


TABLE_ROWS = 50_000


def register_worker(db: psycopg.Connection, tq: TaskQueue, tasks: dict[str, str],
                    queues: list[str] | None = None) -> int:
    """A live worker's row and its registered tasks (``{task: queue}``), as a worker
    publishes them when it starts."""
    schema = sql.Identifier(tq.schema)
    worker_id = db.execute(sql.SQL(
        "INSERT INTO {}.workers (host, pid, queues, concurrency, pgtaskq_version) "
        "VALUES ('test', 1, %s, 4, 'test') RETURNING id").format(schema),
        (queues,)).fetchone()[0]
    for task, queue in tasks.items():
        db.execute(sql.SQL(
            "INSERT INTO {}.worker_tasks (worker_id, task, queue, priority, max_attempts) "
            "VALUES (%s, %s, %s, 0, 3)").format(schema), (worker_id, task, queue))
    return worker_id


def test_changelist_pages_do_not_read_whole_tables(pgtaskq_dsn, tq, db,
                                                   app_schema):  # noqa: F811
    """Django's default filter is SELECT DISTINCT over the table and its paginator counts
    every row: with millions of jobs each page load was seconds of sequential scans."""
    jobs = sql.SQL("{}.jobs").format(sql.Identifier(tq.schema))
    history = sql.SQL("{}.job_history").format(sql.Identifier(tq.schema))
    db.execute(sql.SQL(
        "INSERT INTO {} (queue, task, max_attempts) SELECT 'bulk', 'app.bulk.t' || (g %% 7), 3 "
        "FROM generate_series(1, %s) AS g").format(jobs), (TABLE_ROWS,))
    db.execute(sql.SQL(
        "INSERT INTO {} (id, queue, task, args, kwargs, status, priority, run_at, attempts, "
        "max_attempts, created_at) SELECT g, 'done' || (g %% 3), 'app.old.t' || (g %% 5), "
        "'[]', '{{}}', 'succeeded', 0, now(), 1, 3, now() "
        "FROM generate_series(1, %s) AS g").format(history), (TABLE_ROWS,))
    # a task whose only job is the oldest: its queue must not cost a walk of the table
    db.execute(sql.SQL("UPDATE {} SET task = 'app.first', queue = 'first' WHERE id = 1")
               .format(history))
    register_worker(db, tq, {f"app.bulk.t{i}": "bulk" for i in range(7)})
    for table in (jobs, history):
        db.execute(sql.SQL("ANALYZE {}").format(table))
    with signed_in_admin(pgtaskq_dsn, tq, app_schema) as admin:
        for path, table, tasks, queues in (
            ("/admin/pgtaskq/job/", f'"{tq.schema}".jobs',
             {f"app.bulk.t{i}" for i in range(7)}, {"bulk"}),
            ("/admin/pgtaskq/finishedjob/", f'"{tq.schema}".job_history',
             {f"app.old.t{i}" for i in range(5)} | {"app.first"},
             {"done0", "done1", "done2", "first"}),
        ):
            for asked in (path + "?_facets=True", path):  # Django 5 counts per choice
                before = rows_read(db, admin, table)
                page = admin.get(asked)
                read = rows_read(db, admin, table) - before
                assert read < TABLE_ROWS // 2, f"{asked} read {read:,} rows of {table}"
            assert len(listed_ids(page)) == 50
            assert "more than 10,000 " in page  # counted up to there
            assert tasks <= filter_choices(page, "task")
            assert queues <= filter_choices(page, "queue")


def test_filter_choices_name_what_the_tables_hold_and_filter(pgtaskq_dsn, tq, db,
                                                             app_schema):  # noqa: F811
    schema = sql.Identifier(tq.schema)
    worker_id = register_worker(db, tq, {"app.mail.send": "mail"}, queues=["mail", "idle"])
    ready = tq.enqueue("app.mail.send", queue="mail")
    # a task no worker registers: the parker takes its jobs out of the ready index
    parked = tq.enqueue("app.gone.task", queue="limbo")
    db.execute(sql.SQL("UPDATE {}.jobs SET parked = true WHERE id = %s").format(schema),
               (parked,))
    # running on a worker of an earlier release, which registers nothing
    running = tq.enqueue("app.old.report", queue="reports")
    db.execute(sql.SQL("UPDATE {}.jobs SET status = 'running', worker_id = %s, "
                       "started_at = now() WHERE id = %s").format(schema),
               (worker_id, running))
    tq.pause("frozen")
    failed = tq.enqueue("app.rare.task", queue="rare")
    fail_job(db, tq, failed, "RuntimeError: once")
    for n in range(3):
        fail_job(db, tq, tq.enqueue("app.mail.send", queue="mail"), f"RuntimeError: {n}")

    with signed_in_admin(pgtaskq_dsn, tq, app_schema) as admin:
        page = admin.get("/admin/pgtaskq/job/")
        assert filter_choices(page, "status") == {"queued", "running"}
        assert {"app.mail.send", "app.gone.task", "app.old.report",
                "accounts.tasks.send_welcome"} <= filter_choices(page, "task")
        assert {"mail", "idle", "limbo", "reports", "frozen"} <= filter_choices(page, "queue")
        assert listed_ids(admin.get("/admin/pgtaskq/job/?task=app.gone.task")) == {parked}
        assert listed_ids(admin.get("/admin/pgtaskq/job/?queue=reports")) == {running}
        assert listed_ids(admin.get("/admin/pgtaskq/job/?status=queued&queue=mail")) == {ready}

        page = admin.get("/admin/pgtaskq/finishedjob/")
        assert filter_choices(page, "status") == {"succeeded", "failed", "cancelled"}
        assert filter_choices(page, "task") == {"app.rare.task", "app.mail.send"}
        assert {"rare", "mail"} <= filter_choices(page, "queue")
        assert listed_ids(admin.get("/admin/pgtaskq/finishedjob/?task=app.rare.task")) == {
            failed}
        assert listed_ids(admin.get("/admin/pgtaskq/finishedjob/?queue=rare")) == {failed}
        # a name no source offers still filters (a link from elsewhere)
        page = admin.get("/admin/pgtaskq/job/?task=app.nowhere")
        assert listed_ids(page) == set() and "app.nowhere" in filter_choices(page, "task")
        assert "0 live jobs" in page
