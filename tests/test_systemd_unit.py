"""contrib/systemd/pgtaskq-worker@.service: its settings agree, and its ExecStart works
under a stand-in for systemd (a notify socket that receives READY=1 and watchdog pings,
then SIGTERM as ``KillSignal``, with ``TimeoutStopSec`` as the deadline to exit).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgtaskq.testing import wait_until

UNIT = Path(__file__).resolve().parent.parent / "contrib" / "systemd" / "pgtaskq-worker@.service"


def unit_settings() -> dict[str, list[str]]:
    """Key -> every value it is given in the unit (systemd allows repeated keys)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def environment(settings: dict[str, list[str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for assignment in settings.get("Environment", []):
        name, _, value = assignment.partition("=")
        env[name] = value
    return env


def expand(command: str, env: dict[str, str], instance: str) -> list[str]:
    """systemd's expansion: %i, ${VAR} as one word, $VAR split on whitespace."""
    words: list[str] = []
    for word in shlex.split(command.replace("%i", instance)):
        if re.fullmatch(r"\$[A-Za-z_]\w*", word):
            words.extend(env.get(word[1:], "").split())
        else:
            words.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return words


def test_unit_settings_agree():
    settings = unit_settings()
    env = environment(settings)
    assert settings["Type"] == ["notify"]
    assert settings["KillSignal"] == ["SIGTERM"]
    assert settings["Restart"] == ["on-failure"]
    assert int(settings["WatchdogSec"][0]) > 0
    grace = float(env["PGTASKQ_GRACE"])
    assert "--grace ${PGTASKQ_GRACE}" in settings["ExecStart"][0]
    # systemd must never SIGKILL a worker that is still inside its grace period.
    assert float(settings["TimeoutStopSec"][0]) >= grace + 10


def test_exec_start_runs_a_worker_systemd_can_supervise(pgtaskq_dsn, tq, tmp_path):
    settings = unit_settings()
    app_dir = tmp_path / "srv" / "myapp"
    app_dir.mkdir(parents=True)
    (app_dir / "myapp_tasks.py").write_text(
        "from pgtaskq import TaskQueue\n\ntq = TaskQueue()\n\n\n@tq.task\n"
        "def ping():\n    return 'pong'\n"
    )
    env_file = {  # what /etc/pgtaskq/myapp.env would hold
        "PGTASKQ_DSN": pgtaskq_dsn,
        "PGTASKQ_SCHEMA": tq.schema,
        "PGTASKQ_APP": "myapp_tasks:tq",
        "PGTASKQ_WORKER_OPTS": "--concurrency 2 --poll-interval 0.5",
    }
    env = {**environment(settings), **env_file}
    argv = expand(settings["ExecStart"][0], env, "myapp")
    assert argv[0] == "/srv/myapp/venv/bin/pgtaskq"
    argv = [sys.executable, "-m", "pgtaskq", *argv[1:]]  # this venv stands in for /srv/...

    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(0.2)
    stop_timeout = float(settings["TimeoutStopSec"][0])
    log_path = tmp_path / "worker.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        argv, cwd=app_dir, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, **env, "NOTIFY_SOCKET": str(notify_path),
             "WATCHDOG_USEC": "1000000"},  # WatchdogSec=1: a ping every 0.5 s
    )
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum("WATCHDOG=1" in m for m in messages) < 2:
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                if process.poll() is not None:
                    break
        assert any("READY=1" in m for m in messages), messages
        assert sum("WATCHDOG=1" in m for m in messages) >= 2, messages
        job_id = tq.enqueue("myapp_tasks.ping")
        wait_until(lambda: tq.get_job(job_id).status == "succeeded", 15, what="ping ran")
        process.send_signal(signal.SIGTERM)  # KillSignal
        try:
            code = process.wait(stop_timeout)
        except subprocess.TimeoutExpired:
            pytest.fail("worker outlived TimeoutStopSec; systemd would SIGKILL it")
        assert code == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
        listener.close()
