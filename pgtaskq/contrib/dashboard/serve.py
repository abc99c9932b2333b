"""``pgtaskq dashboard``'s server: the standard library's WSGI server, one thread per request.

Good for one team looking at its queues; behind a real WSGI server (gunicorn, the Flask or
Django mounts) for anything more. Binds 127.0.0.1 unless told otherwise: the dashboard has
no login of its own.
"""

from __future__ import annotations

import logging
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger("pgtaskq.dashboard")


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class QuietHandler(WSGIRequestHandler):
    """Requests logged through ``logging`` (debug), not printed to stderr one by one."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


def make(app: Any, host: str, port: int) -> ThreadingServer:
    return make_server(host, port, app, server_class=ThreadingServer,  # type: ignore[return-value]
                       handler_class=QuietHandler)
