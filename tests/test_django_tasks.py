# ruff: noqa: F811 - pytest fixtures imported from djangotest_settings are parameters
"""django.tasks on pgtaskq: transactional enqueue, results, retries, signals, manage.py.

In-process Django (configured once per session) enqueues; a real ``pgtaskq worker``
subprocess on the same settings runs the jobs.
"""

from __future__ import annotations

import importlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

# Fixtures shared with test_django_example.py (tests take them by parameter name).
from djangotest_settings import django_configured, django_tq  # noqa: F401

from pgtaskq.contrib.django._compat import (
    InvalidTaskError,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_backends,
    task_enqueued,
)
from pgtaskq.contrib.django.results import exception_class_path
from pgtaskq.testing import wait_until

WORKER_APP = "pgtaskq.contrib.django.runner:tq"


class Boom(Exception):
    pass


@pytest.fixture
def tasks(django_tq):
    """The test tasks module, imported once Django is configured (defining tasks needs it)."""
    return importlib.import_module("djangotest_tasks")


def test_rolled_back_atomic_leaves_no_job_and_no_signal(tasks, django_tq, tq):
    announced: list[str] = []

    def on_enqueued(sender, task_result, **kwargs):
        announced.append(task_result.id)

    task_enqueued.connect(on_enqueued, weak=False, dispatch_uid="test.enqueued")
    try:
        with pytest.raises(Boom), transaction.atomic():
            gone = tasks.add.enqueue(1, 2)
            with connection.cursor() as cur:  # visible inside the view's transaction
                cur.execute(f"SELECT count(*) FROM {tq.schema}.jobs WHERE id = %s",
                            [int(gone.id)])
                assert cur.fetchone()[0] == 1
            assert tasks.add.get_result(gone.id).status == TaskResultStatus.READY
            raise Boom
        assert tq.get_job(int(gone.id)) is None
        assert announced == []

        with transaction.atomic():
            kept = tasks.add.enqueue(1, 2)
            assert announced == []  # sent on commit, not before
        assert announced == [kept.id]
    finally:
        task_enqueued.disconnect(dispatch_uid="test.enqueued")
    job = tq.get_job(int(kept.id))
    assert (job.task, job.args, job.status) == ("djangotest_tasks.add", [1, 2], "queued")
    result = tasks.add.get_result(kept.id)
    assert result.status == TaskResultStatus.READY
    assert (result.attempts, result.errors, result.args) == (0, [], [1, 2])


def test_native_task_enqueue_joins_the_atomic_block(tasks, django_tq, tq):
    with pytest.raises(Boom), transaction.atomic():
        gone = tasks.native_double.enqueue(4)
        raise Boom
    with transaction.atomic():
        kept = tasks.native_double.enqueue(5)
    assert tq.get_job(gone) is None
    assert tq.get_job(kept).args == [5]


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_worker_runs_tasks_with_results_retries_and_signals(
    tasks, django_tq, tq, worker_process, tmp_path: Path, pool
):
    signal_log = tmp_path / "signals.jsonl"
    worker = worker_process(
        WORKER_APP, "--concurrency", "4", "--backoff-base", "0.05", "--poll-interval", "0.5",
        "--pool", pool,
        env={"DJANGO_SETTINGS_MODULE": "djangotest_settings",
             "DJANGOTEST_SIGNAL_LOG": str(signal_log)},
    )
    worker.wait_ready()
    added = tasks.add.enqueue(2, 3)
    flaky = tasks.flaky.enqueue(3)
    failing = tasks.always_fails.enqueue()
    awaited = tasks.async_add.enqueue(3, 4)
    native = tasks.native_double.enqueue(21)

    def finished(result_id: str) -> bool:
        return task_backends["default"].get_result(result_id).is_finished

    for result in (added, flaky, failing, awaited):
        wait_until(lambda r=result: finished(r.id), 30, what=f"job {result.id} finished")
    wait_until(lambda: tq.get_job(native).status == "succeeded", 15, what="native job")

    added.refresh()
    assert added.status == TaskResultStatus.SUCCESSFUL
    assert (added.return_value, added.attempts, added.errors) == (5, 1, [])
    assert len(added.worker_ids) == 1 and added.finished_at is not None

    result = tasks.flaky.get_result(flaky.id)
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert (result.return_value, result.attempts) == (3, 3)  # TaskContext.attempt
    assert result.errors[-1].exception_class is RuntimeError

    result = tasks.always_fails.get_result(failing.id)
    assert result.status == TaskResultStatus.FAILED
    assert result.attempts == 3  # OPTIONS MAX_ATTEMPTS
    assert result.errors[-1].exception_class is ValueError
    assert "this task never works" in result.errors[-1].traceback
    with pytest.raises(ValueError):
        result.return_value  # noqa: B018 - django.tasks raises for failed tasks

    assert tasks.async_add.get_result(awaited.id).return_value == 7
    assert tq.get_job(native).result == 42

    seen = [json.loads(line) for line in signal_log.read_text().splitlines()]
    flaky_signals = [(s["signal"], s["status"], s["attempts"])
                     for s in seen if s["id"] == flaky.id]
    assert flaky_signals == [
        ("started", "RUNNING", 1), ("finished", "READY", 1),
        ("started", "RUNNING", 2), ("finished", "READY", 2),
        ("started", "RUNNING", 3), ("finished", "SUCCESSFUL", 3),
    ]
    failing_signals = [(s["signal"], s["status"]) for s in seen if s["id"] == failing.id]
    assert failing_signals[-1] == ("finished", "FAILED")
    assert worker.stop() == 0, worker.output()


def _worker_ids_by_pid(tq) -> dict[int, str]:
    with tq.connect() as conn:
        rows = conn.execute(f'SELECT pid, id FROM "{tq.schema}".workers').fetchall()
    return {pid: str(worker_id) for pid, worker_id in rows}


def test_every_attempt_keeps_its_error_and_its_worker(tasks, django_tq, tq, worker_process):
    """TaskResult.errors held only the last error, and worker_ids repeated the last
    attempt's worker for every attempt."""
    options = ("--concurrency", "1", "--backoff-base", "0.05", "--poll-interval", "0.2")
    env = {"DJANGO_SETTINGS_MODULE": "djangotest_settings"}
    workers = [worker_process(WORKER_APP, *options, env=env) for _ in range(2)]
    for worker in workers:
        worker.wait_ready()
    flaky = tasks.flaky.enqueue(3)
    failing = tasks.always_fails.enqueue()
    for result in (flaky, failing):
        wait_until(lambda r=result: task_backends["default"].get_result(r.id).is_finished,
                   30, what=f"job {result.id} finished")
    real_workers = _worker_ids_by_pid(tq)
    assert {worker.pid for worker in workers} <= set(real_workers)

    flaky.refresh()
    assert (flaky.status, flaky.attempts) == (TaskResultStatus.SUCCESSFUL, 3)
    assert [e.exception_class for e in flaky.errors] == [RuntimeError, RuntimeError]
    assert [f"attempt {n} fails on purpose" in e.traceback
            for n, e in enumerate(flaky.errors, 1)] == [True, True]
    assert len(flaky.worker_ids) == 3
    assert set(flaky.worker_ids) <= set(real_workers.values())
    assert flaky.worker_ids[-1] == str(tq.get_job(int(flaky.id)).worker_id)

    failing.refresh()
    assert (failing.status, failing.attempts) == (TaskResultStatus.FAILED, 3)
    assert [e.exception_class for e in failing.errors] == [ValueError] * 3
    assert all("this task never works" in e.traceback for e in failing.errors)
    assert len(failing.worker_ids) == 3
    assert set(failing.worker_ids) <= set(real_workers.values())

    job = tq.get_job(int(failing.id))
    assert [(a["attempt"], str(a["worker_id"])) for a in job.failed_attempts] == [
        (n, worker_id) for n, worker_id in enumerate(failing.worker_ids, 1)]
    for worker in workers:
        assert worker.stop() == 0, worker.output()


def test_a_result_json_cannot_hold_fails_once_without_running_again(
    tasks, django_tq, tq, worker_process, tmp_path: Path
):
    """django.tasks' ImmediateBackend fails such a task once; retrying it ran the body
    (and its side effects) again on every attempt, failing the same way each time."""
    effects = tmp_path / "effects.txt"
    worker = worker_process(
        WORKER_APP, "--backoff-base", "0.05", "--poll-interval", "0.5",
        env={"DJANGO_SETTINGS_MODULE": "djangotest_settings",
             "DJANGOTEST_SIDE_EFFECTS": str(effects)},
    )
    worker.wait_ready()
    result = tasks.returns_a_set.enqueue("ran")
    wait_until(lambda: tasks.returns_a_set.get_result(result.id).is_finished, 30,
               what="job finished")
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.attempts == 1
    assert result.errors[-1].exception_class is TypeError
    assert "Unsupported type" in result.errors[-1].traceback
    assert effects.read_text().splitlines() == ["ran"]
    job = tq.get_job(int(result.id))
    assert (job.status, job.attempts, job.max_attempts) == ("failed", 1, 3)
    assert worker.stop() == 0, worker.output()


def test_a_dead_workers_django_task_runs_again_elsewhere(tasks, django_tq, tq, worker_process):
    fast_rescue = ("--lease", "1", "--heartbeat-interval", "0.2", "--rescue-interval", "0.3",
                   "--poll-interval", "0.5")
    env = {"DJANGO_SETTINGS_MODULE": "djangotest_settings"}
    doomed = worker_process(WORKER_APP, *fast_rescue, env=env)
    doomed.wait_ready()
    result = tasks.hang_first_attempt.enqueue()
    wait_until(lambda: tasks.hang_first_attempt.get_result(result.id).status
               == TaskResultStatus.RUNNING, 15, what="attempt 1 running")
    doomed.kill()  # SIGKILL: no hand-back, only the lease can bring the job back
    rescuer = worker_process(WORKER_APP, *fast_rescue, env=env)
    rescuer.wait_ready()
    wait_until(lambda: tasks.hang_first_attempt.get_result(result.id).is_finished, 30,
               what="job rescued and finished")
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == result.attempts >= 2
    # the lease-expired attempt is recorded with the worker that died under it
    ids = _worker_ids_by_pid(tq)
    assert result.worker_ids[0] == ids[doomed.pid]
    assert result.worker_ids[-1] == ids[rescuer.pid]
    assert len(result.errors) == result.attempts - 1
    assert f"lease expired: worker {ids[doomed.pid]}" in result.errors[0].traceback
    assert rescuer.stop() == 0


def test_defer_and_priority_reach_the_job(tasks, django_tq, tq):
    backend = task_backends["default"]
    assert backend.supports_defer and backend.supports_priority and backend.supports_get_result
    later = timezone.now() + timedelta(hours=1)
    result = tasks.prioritized.using(run_after=later, priority=-100).enqueue()
    job = tq.get_job(int(result.id))
    assert (job.priority, job.queue) == (-100, "reports")
    assert abs((job.run_at - later).total_seconds()) < 1
    assert tq.get_job(int(tasks.prioritized.enqueue().id)).priority == 50
    with pytest.raises(InvalidTaskError):
        tasks.prioritized.using(priority=101)


def test_get_result_of_unknown_ids(tasks, django_tq, tq):
    backend = task_backends["default"]
    for bad in ("999999999", "not-a-number"):
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(bad)
    native = tasks.native_double.enqueue(1)  # a pgtaskq job, but no django.tasks task
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(str(native))


def test_get_result_never_imports_the_module_a_row_names(tasks, django_tq, tq):
    """The task is looked up in the registry: a row's ``task`` is data, not an import."""
    import sys

    planted = tq.enqueue("apps.import_marker.anything")
    with pytest.raises(TaskResultDoesNotExist):
        task_backends["default"].get_result(str(planted))
    assert "apps.import_marker" not in sys.modules


def test_arguments_must_be_json(tasks, django_tq, tq):
    with pytest.raises(TypeError):
        tasks.add.enqueue(object(), 1)
    assert tq.list_jobs() == []


def test_management_command_mirrors_the_cli(tasks, django_tq, tq, capsys):
    call_command("pgtaskq", "install")
    assert f"pgtaskq schema {tq.schema!r} is up to date" in capsys.readouterr().out
    result = tasks.add.enqueue(4, 5)
    call_command("pgtaskq", "jobs", "--json")
    listed = json.loads(capsys.readouterr().out)
    assert [job["id"] for job in listed] == [int(result.id)]
    with pytest.raises(CommandError, match="no job with id 999999999"):
        call_command("pgtaskq", "show", "999999999")

    from pgtaskq.contrib.cli_bridge import run_cli

    assert run_cli(django_tq, ["worker", "--help"], prog_name="manage.py pgtaskq",
                   worker_app="pgtaskq.contrib.django.runner:tq") == 0
    shown = capsys.readouterr().out
    assert "Usage: manage.py pgtaskq worker [OPTIONS]\n" in shown and "APP" not in shown


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("Traceback (most recent call last):\n  File \"x\", line 1\nValueError: no",
         "builtins.ValueError"),
        ("Traceback...\n  raise X\nmyapp.errors.PaymentError: card declined\n  extra",
         "myapp.errors.PaymentError"),
        ("KeyError", "builtins.KeyError"),
        ("Retry: retry requested in 5s", "pgtaskq.Retry"),
        ("TimeoutError: job 3 (t) exceeded its timeout of 1s", "builtins.TimeoutError"),
        ("", "builtins.Exception"),
    ],
)
def test_exception_class_path_from_a_traceback(text, path):
    assert exception_class_path(text) == path


def test_system_check_reports_bad_settings(django_configured):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError
    from django.test import override_settings

    call_command("check", "--tag", "pgtaskq")
    with override_settings(PGTASKQ={"SCHEMA": "Bad-Name"}), \
            pytest.raises(SystemCheckError, match="invalid schema name"):
        call_command("check", "--tag", "pgtaskq")
    with override_settings(PGTASKQ={"QUEUES": ["x"]}), \
            pytest.raises(SystemCheckError, match="unknown PGTASKQ setting"):
        call_command("check", "--tag", "pgtaskq")


def test_without_a_django_database_jobs_use_pgtaskqs_pool(tasks, django_tq, tq, pgtaskq_dsn):
    from django.test import override_settings

    announced: list[str] = []
    task_enqueued.connect(lambda sender, task_result, **kw: announced.append(task_result.id),
                          weak=False, dispatch_uid="test.pool")
    try:
        with override_settings(PGTASKQ={"DATABASE": None, "DSN": pgtaskq_dsn,
                                        "SCHEMA": tq.schema}):
            with pytest.raises(Boom), transaction.atomic():
                result = tasks.add.enqueue(1, 1)
                raise Boom
            # Not transactional in this mode: the job was committed on its own.
            assert tq.get_job(int(result.id)).status == "queued"
            assert announced == [result.id]
            assert tasks.add.get_result(result.id).status == TaskResultStatus.READY
    finally:
        task_enqueued.disconnect(dispatch_uid="test.pool")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["jobs", "--settings", "x.y"], ["jobs"]),
        (["--settings=x.y", "worker", "-c", "2"], ["worker", "-c", "2"]),
        (["--pythonpath", "/srv", "stats"], ["stats"]),
        (["show", "3"], ["show", "3"]),
    ],
)
def test_manage_py_options_are_not_passed_to_click(argv, expected):
    from pgtaskq.contrib.django.management.commands.pgtaskq import _without_django_options

    assert _without_django_options(argv) == expected


def test_immediate_backend_recipe_runs_tasks_at_enqueue(tasks, django_tq, tq):
    """The documented test-settings recipe: django.tasks' ImmediateBackend, every queue."""
    from django.test import override_settings

    from pgtaskq.contrib.django._compat import FRAMEWORK

    backend = f"{FRAMEWORK}.backends.immediate.ImmediateBackend"
    with override_settings(TASKS={"default": {"BACKEND": backend, "QUEUES": []}}):
        result = tasks.prioritized.enqueue()  # queue "reports"
        assert (result.status, result.return_value) == (TaskResultStatus.SUCCESSFUL, "ok")
    assert tq.list_jobs() == []


def test_django_6_runs_on_its_built_in_django_tasks():
    """CI runs these tests on Django 5.2 with the backport and on Django 6 (make
    test-django6): on Django 6 the backend must be the built-in framework's."""
    import django

    from pgtaskq.contrib.django._compat import FRAMEWORK

    expected = "django.tasks" if django.VERSION >= (6,) else "django_tasks"
    assert expected == FRAMEWORK


def test_check_reports_the_backend_without_pgtaskqs_app(tasks, django_tq):
    """Without the app, migrate installs nothing and the first enqueue fails far from
    the cause: manage.py check says so."""
    from django.conf import settings
    from django.test import override_settings

    backend = task_backends["default"]
    assert [m.id for m in backend.check()] == []
    apps_without = [a for a in settings.INSTALLED_APPS if a != "pgtaskq.contrib.django"]
    with override_settings(INSTALLED_APPS=apps_without):
        messages = backend.check()
    assert [m.id for m in messages] == ["pgtaskq.E002"]
    assert "INSTALLED_APPS" in messages[0].msg
