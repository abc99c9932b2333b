"""The web dashboard: see and steer the queue from a browser (``pgtaskq dashboard``).

A plain WSGI application (:class:`Dashboard`), so it runs under any WSGI server and mounts
in Flask (``pgtaskq.contrib.dashboard.flask``) and Django
(``pgtaskq.contrib.dashboard.django``) with no framework of its own. Pages are rendered on
the server, charts are inline SVG and the stylesheet and script ship in the package:
nothing is fetched from elsewhere and there is no build step.

Modules: ``app`` (routes and safety checks), ``data`` (what is read), ``pages`` (HTML),
``charts`` (SVG), ``markup`` (escaping), ``csrf`` (tokens), ``serve`` (the CLI's server).
"""

from __future__ import annotations

from pgtaskq.contrib.dashboard.app import Dashboard as Dashboard
