"""The dashboard in a Django project: an ``include()`` for urls.py, staff only by default.

::

    urlpatterns = [path("pgtaskq/", include("pgtaskq.contrib.dashboard.django")), ...]

Needs ``django.contrib.auth`` (and its middleware): anonymous users are sent to the login
page, signed-in users who are not active staff get 403. ``PGTASKQ["DASHBOARD_AUTH"]`` may
name another check (a dotted path to ``check(request) -> bool``);
``PGTASKQ["DASHBOARD_READ_ONLY"] = True`` serves the pages without actions. The view is
exempt from Django's CSRF middleware because the dashboard checks its own per-form token
(``pgtaskq.contrib.dashboard.csrf``); every POST without it is refused all the same.
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.urls import re_path
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt

from pgtaskq.contrib.dashboard.app import Dashboard

_dashboards: dict[tuple[str, bool], Dashboard] = {}


def staff_only(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


def _options() -> dict[str, Any]:
    return getattr(settings, "PGTASKQ", {}) or {}


def _dashboard() -> Dashboard:
    from pgtaskq.contrib.django.conf import get_queue

    tq = get_queue()
    read_only = bool(_options().get("DASHBOARD_READ_ONLY", False))
    key = (tq.schema, read_only)
    if key not in _dashboards or _dashboards[key].tq is not tq:
        _dashboards[key] = Dashboard(tq, read_only=read_only)
    return _dashboards[key]


@csrf_exempt
def dashboard_view(request: HttpRequest, path: str = "") -> HttpResponse:
    check = _options().get("DASHBOARD_AUTH")
    allowed = import_string(check) if isinstance(check, str) else (check or staff_only)
    user = getattr(request, "user", None)
    if not allowed(request):
        if user is not None and not user.is_authenticated:
            from django.contrib.auth.views import redirect_to_login

            return redirect_to_login(request.get_full_path())
        return HttpResponseForbidden("You may not see this dashboard.")
    environ = dict(request.META)
    environ["SCRIPT_NAME"] = request.path[: len(request.path) - len(path)].rstrip("/")
    environ["PATH_INFO"] = "/" + path
    # the form as Django parsed it (urlencoded or multipart), re-encoded for the dashboard
    form = urlencode(list(request.POST.items())).encode() if request.method == "POST" else b""
    environ["wsgi.input"] = io.BytesIO(form)
    environ["CONTENT_LENGTH"] = str(len(form))
    environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None
                       ) -> None:
        captured["status"], captured["headers"] = status, headers

    body = b"".join(_dashboard()(environ, start_response))
    response = HttpResponse(body, status=int(captured["status"].split()[0]))
    for name, value in captured["headers"]:
        if name.lower() == "set-cookie":
            cookie_name, _, rest = value.partition("=")
            cookie_value = rest.split(";", 1)[0]
            response.set_cookie(cookie_name, cookie_value, path=environ["SCRIPT_NAME"] + "/",
                                httponly=True, samesite="Strict",
                                secure="Secure" in value)
        else:
            response[name] = value
    return response


urlpatterns = [re_path(r"^(?P<path>.*)$", dashboard_view, name="pgtaskq-dashboard")]
