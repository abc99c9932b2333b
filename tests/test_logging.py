"""Worker logging: fit the application's configuration, or set up a plain one.

Real worker subprocesses: one whose application calls ``logging.basicConfig``, one under a
Django ``LOGGING`` dict (through ``pgtaskq worker`` and through ``django-admin pgtaskq
worker``), one with nothing configured. Each pgtaskq line must be printed once, in the
application's format, at the application's level; a final failure is an ERROR with its
traceback; per-job lines exist at DEBUG; log records inside a job carry its id and task.
"""

from __future__ import annotations

import json
import sys

import pytest
from worker_helpers import FAST

from pgtaskq import TaskQueue
from pgtaskq.testing import wait_until

FAILED_FOR_GOOD = "failed, no attempts left"


def _finished(tq: TaskQueue, *job_ids: int) -> bool:
    jobs = [tq.get_job(job_id) for job_id in job_ids]
    return all(job is not None and job.status in ("succeeded", "failed") for job in jobs)


def _run_jobs(tq: TaskQueue, start_worker, *args: str, **kwargs) -> tuple[str, int, int]:
    """Enqueue one job that logs and one that fails twice, run a worker until both are
    done, stop it; return its output and the two job ids."""
    ok = tq.enqueue("logged.ok", args=[7])
    bad = tq.enqueue("logged.fail", kwargs={"message": "kaput"}, max_attempts=2)
    worker = start_worker(*args, **kwargs)
    wait_until(lambda: _finished(tq, ok, bad) or worker.process.poll() is not None, 30,
               what="both jobs finished")
    assert worker.stop() == 0, worker.output()
    return worker.output(), ok, bad


def _lines_with(output: str, text: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def test_basic_config_app_prints_each_line_once_at_its_level(tq, worker_process) -> None:
    output, _ok, bad = _run_jobs(tq, lambda *a: worker_process("apps.logged:tq", *a), *FAST)

    # INFO lines (the worker's "ready") are below the application's WARNING level.
    assert "ready" not in output, output
    inside = _lines_with(output, "inside the job")
    assert inside == ["BASIC WARNING apps.logged inside the job, value 7"], output
    retried = _lines_with(output, f"job {bad} (logged.fail) attempt 1/2 failed")
    assert len(retried) == 1 and retried[0].startswith("BASIC WARNING pgtaskq.worker")
    final = _lines_with(output, FAILED_FOR_GOOD)
    assert len(final) == 1, output
    assert final[0].startswith(f"BASIC ERROR pgtaskq.worker job {bad} (logged.fail) "
                               "attempt 2/2 failed, no attempts left: RuntimeError: kaput")
    # the traceback follows the ERROR line, once
    after = output[output.index(final[0]):]
    assert after.count("Traceback (most recent call last)") == 1
    assert 'raise RuntimeError(message)' in after


def test_explicit_log_level_applies_to_pgtaskq_only(tq, worker_process) -> None:
    output, ok, _bad = _run_jobs(
        tq, lambda *a: worker_process("apps.logged:tq", *a), *FAST, "--log-level", "DEBUG")
    assert len(_lines_with(output, "ready")) == 1
    assert _lines_with(output, f"job {ok} (logged.ok) attempt 1/20 started") == [
        f"BASIC DEBUG pgtaskq.worker job {ok} (logged.ok) attempt 1/20 started"]
    succeeded = _lines_with(output, f"job {ok} (logged.ok) attempt 1/20 succeeded in ")
    assert len(succeeded) == 1 and succeeded[0].endswith(" ms"), output


@pytest.mark.parametrize("how", ["pgtaskq worker", "django-admin pgtaskq worker"])
def test_django_logging_prints_each_line_once_at_its_level(tq, worker_process, how) -> None:
    env = {"DJANGO_SETTINGS_MODULE": "djangotest_logging_settings"}
    if how == "pgtaskq worker":
        def start(*args):
            return worker_process("pgtaskq.contrib.django.runner:tq", *args, env=env)
    else:
        def start(*args):
            return worker_process("", *args, env=env,
                                  command=[sys.executable, "-m", "django", "pgtaskq",
                                           "worker"])
    output, _ok, bad = _run_jobs(tq, start, *FAST)

    assert "ready" not in output, output
    assert _lines_with(output, "inside the job") == [
        "DJANGOLOG WARNING apps.django_logged inside the job, value 7"], output
    retried = _lines_with(output, f"job {bad} (logged.fail) attempt 1/2 failed")
    assert retried == [f"DJANGOLOG WARNING pgtaskq.worker job {bad} (logged.fail) attempt "
                       "1/2 failed, will retry: RuntimeError: kaput"], output
    final = _lines_with(output, FAILED_FOR_GOOD)
    assert len(final) == 1 and final[0].startswith("DJANGOLOG ERROR pgtaskq.worker"), output
    assert output.count("Traceback (most recent call last)") == 1


def test_unconfigured_app_gets_one_plain_handler(tq, worker_process) -> None:
    output, ok, _bad = _run_jobs(tq, lambda *a: worker_process("apps.logged_plain:tq", *a),
                                *FAST)
    ready = _lines_with(output, "ready")
    assert len(ready) == 1 and " INFO pgtaskq.worker[" in ready[0], output
    # the tasks' own records reach the same handler, with the job in the line
    inside = _lines_with(output, "inside the job")
    assert len(inside) == 1 and " WARNING apps.logged[" in inside[0], output
    assert inside[0].endswith(f"inside the job, value 7 [job {ok} logged.ok attempt 1]")
    assert len(_lines_with(output, FAILED_FOR_GOOD)) == 1


def test_json_log_lines_carry_the_job(tq, worker_process) -> None:
    output, ok, bad = _run_jobs(
        tq, lambda *a: worker_process("apps.logged:tq", *a), *FAST,
        "--configure-logging", "--log-format", "json", "--log-level", "INFO")
    records = [json.loads(line) for line in output.splitlines() if line.strip()]
    inside = [r for r in records if r["message"].startswith("inside the job")]
    assert len(inside) == 1
    assert (inside[0]["job_id"], inside[0]["task"], inside[0]["attempt"],
            inside[0]["logger"], inside[0]["level"]) == (ok, "logged.ok", 1, "apps.logged",
                                                         "WARNING")
    final = [r for r in records if FAILED_FOR_GOOD in r["message"]]
    assert len(final) == 1
    assert (final[0]["level"], final[0]["job_id"], final[0]["attempt"]) == ("ERROR", bad, 2)
    assert "RuntimeError: kaput" in final[0]["exception"]
    assert sum(1 for r in records if r["message"].startswith("worker ") and
               "ready" in r["message"]) == 1
