"""The command line as users start it: ``python -m pgtaskq`` and the ``pgtaskq`` script.

CliRunner tests run the group in-process; these check the entry points, the exit status
and that a user error reaches a real stderr as one line without a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pgtaskq import TaskQueue


def run(*command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )


def console_script() -> str:
    """The installed ``pgtaskq`` script next to this interpreter (or on PATH)."""
    found = shutil.which("pgtaskq", path=str(Path(sys.executable).parent)) or shutil.which(
        "pgtaskq"
    )
    if found is None:
        pytest.fail("the pgtaskq console script is not installed (pip install -e .)")
    return found


def test_python_m_pgtaskq_help() -> None:
    done = run(sys.executable, "-m", "pgtaskq", "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage: pgtaskq" in done.stdout
    assert "enqueue" in done.stdout and "uninstall" in done.stdout


def test_console_script_enqueue_and_show(pgtaskq_dsn: str, tq: TaskQueue) -> None:
    done = run(console_script(), "enqueue", "shell.task", "--args", "[1, 2]",
               PGTASKQ_DSN=pgtaskq_dsn, PGTASKQ_SCHEMA=tq.schema)
    assert done.returncode == 0, done.stderr
    job = tq.get_job(int(done.stdout))
    assert job is not None and (job.task, job.args) == ("shell.task", [1, 2])


def test_console_script_user_error_is_one_line(pgtaskq_dsn: str, schema_name: str) -> None:
    done = run(console_script(), "--dsn", pgtaskq_dsn, "--schema", schema_name, "show", "1")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: pgtaskq is not installed in schema '{schema_name}': "
        f"run 'pgtaskq --schema {schema_name} install'"
    ]
    assert done.stdout == ""
