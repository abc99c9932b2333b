"""A real PgBouncer (Debian's ``pgbouncer`` package) in transaction pooling mode, for tests.

It listens on a free local port in front of the test server and forwards every database
name to that server, logging in as the test DSN's user (``auth_type = any``), so a test
swaps the DSN's host and port and talks to the same database through the pooler. The pool
is deliberately small (2 server connections per database and user): consecutive
statements of one client then land on different server sessions, which is what breaks
named prepared statements, session advisory locks and LISTEN in production.

PgBouncer logs every login and disconnection to its log file and, when it runs in the
foreground as here, to stderr as well, and it writes them with blocking writes from its one
thread. Its stderr therefore goes to a file, never to a pipe nobody reads: once the pipe's
64 KiB were full (about 250 client connections), PgBouncer stopped in ``write(2)`` and every
client through it waited for ever, including one holding pgtaskq's install lock, whose
result never came back (test_the_pooler_answers_after_more_log_than_a_pipe_holds).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo as pg_conninfo

CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
HOW_TO_GET = ("PgBouncer tests skipped: pgbouncer is not installed "
              "(apt-get install -y pgbouncer; .ci/run does it)")


def binary() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((path for path in CANDIDATES if os.path.exists(path)), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgBouncer:
    """``pgbouncer`` running in a temporary directory; ``dsn(server_dsn)`` points at it."""

    def __init__(self, server_dsn: str, *, pool_size: int = 2) -> None:
        exe = binary()
        if exe is None:
            pytest.skip(HOW_TO_GET)
        params = pg_conninfo.conninfo_to_dict(server_dsn)
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="pgtaskq-pgbouncer-"))
        self.directory.chmod(0o777)  # pgbouncer drops root to nobody: it writes its log here
        target = " ".join(
            f"{key}={params[key]}" for key in ("host", "port", "user", "password")
            if params.get(key)
        )
        config = self.directory / "pgbouncer.ini"
        config.write_text(f"""
[databases]
* = {target}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 500
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
admin_users = pgbouncer
logfile = {self.directory}/pgbouncer.log
pidfile = {self.directory}/pgbouncer.pid
""")
        config.chmod(0o644)
        argv = [exe, str(config)]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            argv[1:1] = ["-u", _unprivileged_user(params.get("host", ""))]
        with open(self.directory / "stderr.log", "wb") as stderr:  # not a pipe: see above
            self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        self.server_dsn = server_dsn
        self._wait_ready()

    def dsn(self, dsn: str | None = None) -> str:
        """``dsn`` (default the server's) with host and port replaced by the pooler's."""
        return pg_conninfo.make_conninfo(dsn or self.server_dsn, host="127.0.0.1",
                                         port=str(self.port))

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                err = (self.directory / "stderr.log").read_text(errors="replace")
                pytest.fail(f"pgbouncer exited with {self.process.returncode}: {err}\n"
                            f"{self.log()}")
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def show(self, what: str) -> list[dict[str, object]]:
        """``SHOW POOLS``, ``CLIENTS``, ``SERVERS``...: the admin console's rows, to say in
        a failing test what the pooler was doing."""
        with psycopg.connect(host="127.0.0.1", port=self.port, dbname="pgbouncer",
                             user="pgbouncer", autocommit=True, prepare_threshold=None,
                             connect_timeout=5) as admin:
            cursor = admin.execute(f"SHOW {what}", prepare=False)
            names = [column.name for column in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)


def _unprivileged_user(host: str) -> str:
    """``nobody``, or for a server on a Unix socket the user owning that socket (the
    embedded server's socket directory is not open to everyone)."""
    if host.startswith("/"):
        import pwd

        return pwd.getpwuid(os.stat(host).st_uid).pw_name
    return "nobody"


def running(server_dsn: str) -> Iterator[PgBouncer]:
    """Generator for a fixture: a PgBouncer for the session, stopped at its end."""
    bouncer = PgBouncer(server_dsn)
    try:
        yield bouncer
    finally:
        bouncer.stop()
