"""The dashboard in a Flask app: a blueprint, behind the app's own authentication.

::

    from pgtaskq.contrib.dashboard.flask import dashboard_blueprint

    app.register_blueprint(
        dashboard_blueprint(pgtq, auth=lambda: current_user.is_authenticated
                            and current_user.is_admin),
        url_prefix="/pgtaskq")

``auth`` is called for every request (in the request's context) and must return True to let
it through; anything else answers 403, or, when it returns a response (a redirect to the
login page, say), that response. It has no default: a dashboard that can retry, cancel
and pause must not be public by omission (pass ``auth=lambda: True`` to mean it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, abort, request
from werkzeug.wrappers import Response

from pgtaskq.contrib.dashboard.app import Dashboard
from pgtaskq.queue import TaskQueue


def dashboard_blueprint(tq: TaskQueue, *, auth: Callable[[], Any], read_only: bool = False,
                        refresh: float = 5.0, name: str = "pgtaskq_dashboard") -> Blueprint:
    """A blueprint serving the dashboard of ``tq`` wherever it is registered."""
    dashboard = Dashboard(tq, read_only=read_only, refresh=refresh)
    blueprint = Blueprint(name, __name__)

    @blueprint.route("/", defaults={"path": ""}, methods=["GET", "POST", "HEAD"])
    @blueprint.route("/<path:path>", methods=["GET", "POST", "HEAD"])
    def serve(path: str) -> Any:
        allowed = auth()
        if isinstance(allowed, Response):
            return allowed
        if allowed is not True:
            abort(403)
        mount = request.path[: len(request.path) - len(path)].rstrip("/")
        environ = dict(request.environ)
        environ["SCRIPT_NAME"] = request.script_root + mount
        environ["PATH_INFO"] = "/" + path
        return Response.from_app(dashboard, environ)

    return blueprint
