"""Every setting of a worker, declared once: its default, its check, its command-line help.

``Worker(tq, ...)``'s keyword arguments, the options of ``pgtaskq worker`` (and so of
``manage.py pgtaskq worker`` and ``flask pgtaskq worker``, which reuse that command) and
the worker's attributes all come from ``WorkerConfig``'s fields. A value that fails its
check raises ``ConfigurationError`` naming the setting, before anything connects.

This module imports neither click nor the rest of the worker: the command line reads its
declarations to build its options (``pgtaskq.cli.worker``) without loading the worker.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pgtaskq import defaults, options
from pgtaskq.errors import ConfigurationError

KINDS = ("count", "count0", "seconds", "seconds0", "duration", "mib", "flag", "queues",
         "text", "pool")
"""What a setting holds, which decides its check and its command-line type:
``count`` an int >= 1, ``count0`` an int >= 0, ``seconds`` a finite number > 0, ``seconds0``
>= 0, ``duration`` seconds the command line also takes as ``90s``/``3h``/``2d``, ``mib``
mebibytes > 0, ``flag`` a bool, ``queues`` queue names, ``text`` a string, ``pool`` one of
``POOLS``."""
POOLS = ("thread", "process")


def setting(default: Any, kind: str, help: str = "", *, optional: bool = False,
            flags: tuple[str, ...] = (), cli: bool = True, **cli_extra: Any) -> Any:
    """A ``WorkerConfig`` field: ``optional`` admits None; ``flags`` are short command-line
    aliases; ``cli=False`` keeps it off the command line; ``cli_extra`` (``metavar``,
    ``envvar``, ``show_default``) goes to the click option as it is."""
    assert kind in KINDS, kind
    return field(default=default, metadata={
        "kind": kind, "help": help, "optional": optional, "flags": flags, "cli": cli,
        "cli_extra": cli_extra})


@dataclass(frozen=True)
class WorkerConfig:
    """A worker's validated settings: ``WorkerConfig(concurrency=4, queues=["mail"])``."""

    concurrency: int = setting(defaults.CONCURRENCY, "count",
                               "Slots: threads, or child processes with --pool process.",
                               flags=("-c",))
    queues: list[str] | None = setting(
        None, "queues", "Serve only this queue (repeatable); default: all queues.",
        optional=True, flags=("-q",), metavar="QUEUE")
    poll_interval: float = setting(defaults.POLL_INTERVAL, "seconds",
                                   "Seconds between polls when no NOTIFY arrives.")
    poll_only: bool = setting(False, "flag", "Do not LISTEN (e.g. behind PgBouncer).")
    listen_dsn: str | None = setting(
        None, "text", "Direct DSN for LISTEN when --dsn goes through a transaction pooler "
        "(default $PGTASKQ_LISTEN_DSN: keeps its password out of `ps`).", optional=True,
        metavar="DSN", envvar="PGTASKQ_LISTEN_DSN")
    grace: float = setting(defaults.GRACE, "seconds0",
                           "Seconds running jobs get to finish on SIGTERM.")
    lease: float = setting(defaults.LEASE, "seconds",
                           "Seconds a lease lasts without a heartbeat.")
    claimers: int = setting(
        defaults.CLAIMERS, "count0", "Workers of the same queues that may lease jobs at the "
        "same moment; the others wait for a turn (0: no limit). Give all of them the same "
        "value.")
    heartbeat_interval: float = setting(defaults.HEARTBEAT_INTERVAL, "seconds",
                                        "Seconds between two extensions of the leases.")
    rescue_interval: float = setting(defaults.RESCUE_INTERVAL, "seconds",
                                     "Seconds between looks for jobs of dead workers.")
    prefetch: int | None = setting(
        None, "count0", "Jobs leased beyond the free slots (they wait for a slot). Default: "
        "as many as start within 50 ms at the recent job duration, up to 32 per slot.",
        optional=True, show_default="adaptive")
    backoff_base: float = setting(defaults.BACKOFF_BASE, "seconds",
                                  "Seconds before the first automatic retry; doubles per "
                                  "attempt.")
    backoff_cap: float = setting(defaults.BACKOFF_CAP, "seconds",
                                 "Longest backoff between two attempts, seconds.")
    completer_flush_interval: float = setting(
        defaults.COMPLETER_FLUSH_INTERVAL, "seconds",
        "Longest a finished job's outcome waits before it is written, seconds.")
    completer_batch_size: int = setting(defaults.COMPLETER_BATCH_SIZE, "count",
                                        "Most outcomes written by one statement.")
    keep_succeeded: float = setting(
        defaults.KEEP_SUCCEEDED, "duration",
        "Keep succeeded jobs' history this long (90s, 3h, 2d).", show_default="1d")
    keep_failed: float = setting(defaults.KEEP_FAILED, "duration",
                                 "Keep failed and cancelled jobs' history this long.",
                                 show_default="7d")
    keep_stats: float = setting(defaults.KEEP_STATS, "duration",
                                "Keep the per-minute statistics this long.",
                                show_default="2d")
    prune_interval: float = setting(defaults.PRUNE_INTERVAL, "seconds",
                                    "Seconds between two deletions of expired history.")
    prune_batch: int = setting(defaults.PRUNE_BATCH, "count",
                               "Most rows one pruning statement deletes.")
    burst: bool = setting(False, "flag", "Run the jobs that are due, then exit 0 (CI, cron, "
                          "one-off drains).")
    max_jobs: int | None = setting(None, "count", "Exit 0 after N jobs, to be restarted by "
                                   "the supervisor.", optional=True, metavar="N")
    max_memory: float | None = setting(None, "mib", "Exit 0 once resident memory passes MB "
                                       "MiB (leaky tasks).", optional=True, metavar="MB")
    pool: str = setting(
        defaults.POOL, "pool", "Run jobs in slot threads, or in one child process per slot "
        "(a job over its timeout is stopped, a crash fails one attempt, CPU-bound jobs use "
        "every core; Linux).")
    kill_grace: float = setting(
        defaults.KILL_GRACE, "seconds0", "--pool process: seconds a job past its timeout "
        "(or force-cancelled) gets to stop by itself before its process gets SIGTERM, then "
        "SIGKILL.")
    max_jobs_per_child: int | None = setting(
        None, "count", "--pool process: replace a slot's child process after N jobs.",
        optional=True, metavar="N")
    max_memory_per_child: float | None = setting(
        None, "mib", "--pool process: replace a child between jobs once its resident "
        "memory passes MB MiB.", optional=True, metavar="MB")
    install_signal_handlers: bool = setting(True, "flag", cli=False)

    def __post_init__(self) -> None:
        for declared in dataclasses.fields(self):
            value = getattr(self, declared.name)
            if value is None and declared.metadata["optional"]:
                continue
            checked = _CHECKS[declared.metadata["kind"]](declared.name, value)
            object.__setattr__(self, declared.name, checked)
        if self.pool == "process" and not hasattr(os, "pidfd_open"):
            raise ConfigurationError("pool='process' needs Linux >= 5.3 (pidfd_open)")
        if self.pool != "process" and (self.max_jobs_per_child is not None
                                       or self.max_memory_per_child is not None):
            raise ConfigurationError("max_jobs_per_child and max_memory_per_child need "
                                     "pool='process'")
        if self.heartbeat_interval >= self.lease:
            raise ConfigurationError(
                f"heartbeat_interval ({self.heartbeat_interval}s) must be shorter than the "
                f"lease ({self.lease}s), or every lease would expire between two heartbeats"
            )

    def replace(self, **changes: Any) -> WorkerConfig:
        """A copy with ``changes``, checked again."""
        return dataclasses.replace(self, **changes)


def declarations() -> Iterator[dataclasses.Field]:
    """The settings, in declaration order (the command line's option order)."""
    return iter(dataclasses.fields(WorkerConfig))


def _count(least: int) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            optional = any(f.name == name and f.metadata["optional"] for f in declarations())
            raise ConfigurationError(f"{name} must be an int >= {least}"
                                     f"{' or None' if optional else ''}, got {value!r}")
        return value

    return check


def _positive(name: str, value: Any) -> float:
    """A finite number > 0 (NaN or infinity would reach a thread's wait() and kill it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
    return options.check_seconds(name, value)


def _pool(name: str, value: Any) -> str:
    if value not in POOLS:
        raise ConfigurationError(f"{name} must be 'thread' or 'process', got {value!r}")
    return value


def _queues(name: str, value: Any) -> list[str] | None:
    return sorted({options.check_queue(q) for q in value}) if value else None


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "count": _count(1),
    "count0": _count(0),
    "seconds": _positive,
    "seconds0": lambda name, value: options.check_seconds(name, value, zero_ok=True),
    "duration": _positive,
    "mib": _positive,
    "flag": lambda name, value: bool(value),
    "queues": _queues,
    "text": lambda name, value: value,
    "pool": _pool,
}
