"""The Django admin's job pages and the dashboard's include(), in examples/django_project
under real gunicorn: a staff user signs in through the admin's login form, retries a
failed job with an admin action, and opens the dashboard that anonymous users cannot."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request

from test_dashboard import fail_job
from test_django_example import PROJECT, app_schema, manage  # noqa: F401
from webapps import start_gunicorn


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
