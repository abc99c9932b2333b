"""A DSN's password is never printed, logged or put in an error (issue 13, finding 5).

libpq quotes the connection string it could not parse; these tests feed pgtaskq malformed
DSNs that carry a password and look for the password everywhere a user could see it: the
CLI's stderr, a worker's log, an exception and its traceback, the demo's output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback

import psycopg.conninfo
import pytest
from worker_helpers import TESTS

from pgtaskq import ConfigurationError, PgtaskqError, TaskQueue
from pgtaskq.redact import masked_dsn, redact
from pgtaskq.testing import WorkerProcess, wait_until

SECRET = "S3cretPw"

MALFORMED = [
    f"postgresql://app:{SECRET}@[::1",
    f"postgresql://app:{SECRET}@localhost/db?sslmode=require&broken",
    f"host=localhost user=app password='{SECRET} dbname=x",
    f"host=localhost user=app password {SECRET} dbname=x",
    f"host=localhost user=app password={SECRET} port=notaport",
]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pgtaskq", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})


@pytest.mark.parametrize("dsn", MALFORMED)
def test_cli_error_for_a_malformed_dsn_masks_its_password(dsn: str) -> None:
    done = run_cli("--dsn", dsn, "jobs")
    assert done.returncode != 0
    assert done.stderr.startswith("Error: ")
    assert SECRET not in done.stderr + done.stdout


@pytest.mark.parametrize("dsn", MALFORMED)
def test_api_error_for_a_malformed_dsn_masks_its_password(dsn: str) -> None:
    tq = TaskQueue(dsn, schema="secrets_test")
    with pytest.raises(PgtaskqError) as caught:
        tq.enqueue("t")
    shown = "".join(traceback.format_exception(caught.value))
    assert SECRET not in shown, shown


def test_worker_start_up_masks_the_password(tmp_path: object) -> None:
    worker = WorkerProcess("apps.basic:tq", MALFORMED[0], "secrets_test",
                           pythonpath=[TESTS])
    try:
        assert worker.wait(60) != 0
        assert "Error:" in worker.output()
        assert SECRET not in worker.output()
    finally:
        worker.close()


def test_listen_dsn_from_the_environment_and_masked_in_the_log(
    tq: TaskQueue, pgtaskq_dsn: str
) -> None:
    """``--listen-dsn`` comes from $PGTASKQ_LISTEN_DSN; the LISTEN warning masks it."""
    worker = WorkerProcess("apps.basic:tq", pgtaskq_dsn, tq.schema,
                           ["--poll-interval", "0.2"],
                           env={"PGTASKQ_LISTEN_DSN": MALFORMED[0]}, pythonpath=[TESTS])
    try:
        worker.wait_ready()
        wait_until(lambda: "LISTEN failed" in worker.output(), 15, what="LISTEN warning")
        assert SECRET not in worker.output()
        assert worker.stop() == 0
    finally:
        worker.close()


def test_demo_never_shows_the_password(pgtaskq_dsn: str, schema_name: str) -> None:
    # The test server trusts local connections, so the password is accepted and ignored.
    dsn = psycopg.conninfo.make_conninfo(pgtaskq_dsn, password=SECRET)
    env = {**os.environ, "PGTASKQ_DSN": dsn, "PGTASKQ_DEMO_SCHEMA": schema_name}
    try:
        done = subprocess.run([sys.executable, "-m", "pgtaskq.demo"], env=env,
                              capture_output=True, text=True, timeout=90)
    finally:
        TaskQueue(pgtaskq_dsn, schema=schema_name).uninstall()
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_redact_masks_passwords_and_keeps_the_rest() -> None:
    assert masked_dsn("postgresql://app:p%40ss@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert masked_dsn("host=db password='a b' user=u") == "host=db password=*** user=u"
    assert masked_dsn("postgresql://db/x?password=zz&sslmode=require") == (
        "postgresql://db/x?password=***&sslmode=require")
    assert masked_dsn("postgresql://app@db/x") == "postgresql://app@db/x"
    assert redact('missing "=" after "hunter2" in connection info string',
                  "host=db password hunter2") == (
        'missing "=" after "***" in connection info string')


def test_configuration_error_is_a_value_error() -> None:
    assert issubclass(ConfigurationError, ValueError)
