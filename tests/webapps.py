"""Real processes for the web-stack tests: gunicorn serving an example app, a worker beside it.

The claim under test is end to end: a view's enqueue commits or rolls back with the view
under a real WSGI server (several processes, several threads each), and a real worker runs
each committed job once. So these helpers start real subprocesses on 127.0.0.1 and talk
HTTP to them; they wait with deadlines, never with bare sleeps.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pgtaskq.testing import wait_until

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.cache
def _log_directory() -> str:
    """One temporary directory for every Service log of this test run, removed at exit
    (logs are read after a service stops, so they cannot go with ``stop()``)."""
    directory = tempfile.mkdtemp(prefix="pgtaskq-web-logs-")
    atexit.register(shutil.rmtree, directory, True)
    return directory


class Service:
    """A subprocess whose output goes to a file (a chatty process never blocks on a pipe)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], cwd: Path) -> None:
        self.argv = list(argv)
        self.log_path = Path(tempfile.mkstemp(prefix="pgtaskq-web-", suffix=".log",
                                              dir=_log_directory())[1])
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            cwd=cwd,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def fail_if_dead(self) -> None:
        if not self.alive():
            pytest.fail(
                f"{self.argv[2:4]} exited with {self.process.returncode}:\n{self.output()}"
            )

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        wait_until(lambda: text in self.output() or not self.alive(), timeout, what=text)
        self.fail_if_dead()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; kill (and fail) if it does not exit in time."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            pytest.fail(f"{self.argv} did not stop within {timeout}s:\n{self.output()}")
        finally:
            self._log.close()
        return code


def gunicorn_argv(app: str, port: int) -> list[str]:
    """gunicorn with 2 worker processes of 8 threads each, on 127.0.0.1 only."""
    import gunicorn.config

    argv = [sys.executable, "-m", "gunicorn", "--workers", "2", "--threads", "8",
            "--worker-class", "gthread", "--bind", f"127.0.0.1:{port}",
            "--graceful-timeout", "5", "--timeout", "60"]
    if hasattr(gunicorn.config, "ControlSocketDisable"):
        # gunicorn >= 25 opens a control socket at a fixed path in $HOME: tests running
        # side by side would fight over it.
        argv.append("--no-control-socket")
    return [*argv, app]


def start_gunicorn(app: str, cwd: Path, env: dict[str, str]) -> tuple[Service, str]:
    """Start gunicorn and wait until ``/health`` answers; return it and its base URL.

    The free port is only free when we looked: if another process takes it first,
    gunicorn exits with "Address already in use" and we try another port.
    """
    for _ in range(3):
        port = free_port()
        server = Service(gunicorn_argv(app, port), env, cwd)
        base_url = f"http://127.0.0.1:{port}"
        if _wait_healthy(server, base_url):
            return server, base_url
        server.stop()
        if "already in use" not in server.output():
            break
    pytest.fail(f"gunicorn did not start:\n{server.output()}")


def _wait_healthy(server: Service, base_url: str) -> bool:
    def healthy_or_dead() -> bool:
        if not server.alive():
            return True
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    wait_until(healthy_or_dead, 30, interval=0.1, what="gunicorn answering /health")
    return server.alive()


def post_json(url: str, body: dict[str, Any], timeout: float = 30.0) -> tuple[int, Any]:
    """POST JSON; return (status, decoded JSON body) for any HTTP status."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read() or b"null")


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Storm:
    """What came back from the concurrent signups."""

    committed: dict[str, int]   # email -> job id, for 200 responses
    rolled_back: dict[str, int]  # email -> job id the failed request had enqueued
    other: list[tuple[str, int, Any]]


def signup_storm(base_url: str, requests: int = 200, threads: int = 16) -> Storm:
    """``requests`` concurrent POST /signup, every second one with ``?fail=1``."""

    def one(index: int) -> tuple[str, bool, int, Any]:
        fail = index % 2 == 1
        email = f"user{index}@example.org"
        url = f"{base_url}/signup" + ("?fail=1" if fail else "")
        status, body = post_json(url, {"email": email})
        return email, fail, status, body

    storm = Storm({}, {}, [])
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for email, fail, status, body in pool.map(one, range(requests)):
            if not fail and status == 200:
                storm.committed[email] = int(body["job_id"])
            elif fail and status == 500 and isinstance(body, dict) and body.get("job_id"):
                storm.rolled_back[email] = int(body["job_id"])
            else:
                storm.other.append((email, status, body))
    return storm


def storm_and_check_jobs(base_url: str, worker: Service, tq: Any, db: Any,
                         sent_count_query: str) -> Storm:
    """200 concurrent signups (half fail after their enqueue), then the checks both
    examples share: a job for exactly each committed signup, each run once, none for the
    rolled-back ones. ``sent_count_query`` counts the welcome emails the jobs wrote."""
    storm = signup_storm(base_url, requests=200, threads=16)
    assert storm.other == []
    assert len(storm.committed) == 100 and len(storm.rolled_back) == 100

    def all_sent() -> bool:
        worker.fail_if_dead()
        return db.execute(sent_count_query).fetchone()[0] == 100

    wait_until(all_sent, 60, interval=0.1, what="100 welcome emails")
    wait_until(lambda: len(tq.list_jobs(status="succeeded", limit=500)) == 100, 15,
               what="100 succeeded jobs")
    jobs = tq.list_jobs(limit=500)
    assert sorted(job.id for job in jobs) == sorted(storm.committed.values())
    assert {(job.status, job.attempts) for job in jobs} == {("succeeded", 1)}
    assert all(tq.get_job(job_id) is None for job_id in storm.rolled_back.values())
    return storm
