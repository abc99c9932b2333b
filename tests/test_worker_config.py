"""``WorkerConfig``: each worker setting declared once, and everything derived from it."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest

from pgtaskq import ConfigurationError, TaskQueue, Worker, defaults
from pgtaskq.cli import cli
from pgtaskq.contrib.cli_bridge import framework_cli
from pgtaskq.worker.config import WorkerConfig, declarations

OFFLINE = "postgresql://nowhere/x"


def _cli_settings() -> list[dataclasses.Field]:
    return [d for d in declarations() if d.metadata["cli"]]


def test_worker_takes_every_setting_and_keeps_it_in_its_config():
    given = {"concurrency": 3, "queues": ["b", "a", "b"], "poll_interval": 0.5,
             "lease": 30.0, "heartbeat_interval": 5.0, "keep_stats": 3600.0,
             "completer_batch_size": 50, "prune_batch": 10, "burst": True}
    worker = Worker(TaskQueue(OFFLINE), **given)
    assert worker.config == WorkerConfig(**given)
    assert worker.config.queues == ["a", "b"]
    assert worker.exit_rules.burst
    with pytest.raises(TypeError):
        Worker(TaskQueue(OFFLINE), no_such_setting=1)


def test_config_argument_and_overrides():
    base = WorkerConfig(concurrency=2, grace=1.0)
    worker = Worker(TaskQueue(OFFLINE), config=base, grace=0.0)
    assert worker.config == WorkerConfig(concurrency=2, grace=0.0)
    assert Worker(TaskQueue(OFFLINE), 4, ["q"]).config == WorkerConfig(concurrency=4,
                                                                        queues=["q"])


@pytest.mark.parametrize("declared", list(declarations()), ids=lambda d: d.name)
def test_every_setting_is_checked(declared: dataclasses.Field):
    kind = declared.metadata["kind"]
    bad = {"count": 0, "count0": -1, "seconds": math.inf, "seconds0": -1.0,
           "duration": math.nan, "mib": 0.0, "queues": ["bad\x00queue"]}.get(kind)
    if bad is None:  # flags and text take anything
        return
    with pytest.raises(ConfigurationError, match=declared.name if kind != "queues" else "queue"):
        WorkerConfig(**{declared.name: bad})


def test_heartbeat_must_be_shorter_than_the_lease():
    with pytest.raises(ConfigurationError, match="heartbeat_interval"):
        WorkerConfig(lease=10.0, heartbeat_interval=10.0)


def test_defaults_of_the_worker_are_the_ones_in_defaults_py():
    for declared in declarations():
        constant = declared.name.upper()
        if hasattr(defaults, constant):
            assert declared.default == getattr(defaults, constant), constant


def test_every_value_in_defaults_py_can_be_overridden():
    """defaults.py says so: each constant is a setting of the worker, of the TaskQueue,
    of a task or an enqueue, or one of the two fixed thresholds it names."""
    queue_params = set(inspect.signature(TaskQueue).parameters)
    worker_settings = {d.name for d in declarations()}
    per_task = {"QUEUE": "queue", "PRIORITY": "priority", "MAX_ATTEMPTS": "max_attempts"}
    fixed = {"WORKER_LOST_AFTER_BEATS", "WORKER_LOST_AFTER_MIN"}
    for constant in (n for n in vars(defaults) if n.isupper()):
        name = constant.lower()
        # the schema, the embedded server's path and the application_name: TaskQueue's
        # schema= and dsn= ("embedded:PATH", application_name=...)
        by_dsn = {"SCHEMA", "EMBEDDED_PATH", "PRODUCER_APPLICATION_NAME"}
        assert (name in worker_settings or name in queue_params or constant in per_task
                or constant in fixed or constant in by_dsn), constant
    for constant in fixed:
        assert constant in (defaults.__doc__ or ""), constant


@pytest.mark.parametrize("group", [cli, framework_cli("x:tq")], ids=["pgtaskq", "framework"])
def test_the_worker_commands_have_an_option_per_setting(group):
    params = {p.name: p for p in group.commands["worker"].params}
    for declared in _cli_settings():
        assert declared.name in params, declared.name
        param = params[declared.name]
        if declared.metadata["kind"] == "queues":
            assert param.multiple
        elif declared.metadata["kind"] != "flag":
            assert param.default == declared.default, declared.name
    assert "install_signal_handlers" not in params
