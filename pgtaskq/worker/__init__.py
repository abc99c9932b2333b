"""The worker: everything a ``pgtaskq worker`` process runs, and nothing a producer needs.

A job's path through this package: the main loop (``main``) wakes on the ``listener``,
leases jobs into ``held``, the ``slots`` run them, the ``completer`` writes each outcome and
the per-minute ``rollup``; beside them run the ``heartbeat`` (extends leases), the
``rescuer`` (expired leases), the ``parker`` (jobs no claim can take), the ``pruner``
(retention) and the cron ``scheduler``. The producer side (``pgtaskq.queue``) never
imports this package: a web process that only enqueues does not load threads, signal
handling or the slot machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgtaskq.worker.main import Worker as Worker


def __getattr__(name: str) -> object:
    # Lazy, so that the command line can read the worker's settings (``config``) without
    # loading the worker itself.
    if name == "Worker":
        from pgtaskq.worker.main import Worker

        return Worker
    raise AttributeError(f"module 'pgtaskq.worker' has no attribute {name!r}")
