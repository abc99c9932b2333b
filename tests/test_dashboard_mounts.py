# ruff: noqa: F811 - pytest fixtures imported from djangotest_settings are parameters
"""The dashboard mounted in Flask (a blueprint behind the app's auth hook) and in Django
(an include() behind staff-only auth), each answering through its framework."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from djangotest_settings import django_configured, django_tq  # noqa: F401
from test_dashboard import Browser

from pgtaskq import TaskQueue


@pytest.fixture
def flask_port(tq: TaskQueue) -> Iterator[int]:
    from flask import Flask, request
    from werkzeug.serving import make_server

    from pgtaskq.contrib.dashboard.flask import dashboard_blueprint

    app = Flask(__name__)
    app.register_blueprint(
        dashboard_blueprint(tq, auth=lambda: request.headers.get("X-User") == "admin"),
        url_prefix="/pgtaskq")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()


def test_flask_blueprint_behind_the_auth_hook(flask_port: int, tq: TaskQueue) -> None:
    tq.enqueue("x.task", queue="mail")
    browser = Browser(flask_port)
    status, _, _ = browser.request("GET", "/pgtaskq/")
    assert status == 403
    admin = {"X-User": "admin"}
    status, headers, page = browser.request("GET", "/pgtaskq/", headers=admin)
    assert status == 200 and 'data-queue="mail"' in page
    assert "Path=/pgtaskq/" in headers["set-cookie"]
    assert 'href="/pgtaskq/jobs?queue=mail"' in page
    token = re.search(r'action="/pgtaskq/queues/mail/pause"[^>]*><input type="hidden" '
                      r'name="csrf_token" value="(\w+)"', page).group(1)
    origin = {"Origin": f"http://127.0.0.1:{flask_port}"}
    status, _, _ = browser.request("POST", "/pgtaskq/queues/mail/pause",
                                   {"csrf_token": token}, origin)
    assert status == 403 and tq.paused_queues() == {}  # the hook refuses first
    status, headers, _ = browser.request("POST", "/pgtaskq/queues/mail/pause",
                                         {"csrf_token": token}, {**origin, **admin})
    assert status == 303 and headers["location"].startswith("/pgtaskq/?notice=paused")
    assert list(tq.paused_queues()) == ["mail"]


def test_django_include_is_staff_only(django_tq) -> None:
    from django.test import RequestFactory, override_settings

    from pgtaskq.contrib.dashboard.django import dashboard_view

    django_tq.enqueue("x.task", queue="mail")
    factory = RequestFactory()

    def get(path: str, user: SimpleNamespace, **extra: str):
        request = factory.get("/ops/pgtaskq/" + path, **extra)
        request.user = user
        return dashboard_view(request, path=path)

    staff = SimpleNamespace(is_authenticated=True, is_active=True, is_staff=True)
    member = SimpleNamespace(is_authenticated=True, is_active=True, is_staff=False)
    assert get("", member).status_code == 403
    response = get("", staff)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-queue="mail"' in page and 'href="/ops/pgtaskq/jobs?queue=mail"' in page
    cookie = response.cookies["pgtaskq_csrf"]
    assert cookie["path"] == "/ops/pgtaskq/" and cookie["samesite"] == "Strict"
    token = re.search(r'action="/ops/pgtaskq/queues/mail/pause"[^>]*><input type="hidden" '
                      r'name="csrf_token" value="(\w+)"', page).group(1)

    def post(token: str, user: SimpleNamespace):
        request = factory.post("/ops/pgtaskq/queues/mail/pause", {"csrf_token": token},
                               HTTP_COOKIE=f"pgtaskq_csrf={cookie.value}",
                               HTTP_ORIGIN="http://testserver")
        request.user = user
        return dashboard_view(request, path="queues/mail/pause")

    assert post(token, member).status_code == 403
    assert post("f" * 64, staff).status_code == 403
    assert django_tq.paused_queues() == {}
    assert post(token, staff).status_code == 303
    assert list(django_tq.paused_queues()) == ["mail"]
    with override_settings(PGTASKQ={**django_settings(django_tq), "DASHBOARD_READ_ONLY": True}):
        assert 'method="post"' not in get("", staff).content.decode()


def django_settings(queue) -> dict:
    from django.conf import settings

    return dict(settings.PGTASKQ)
