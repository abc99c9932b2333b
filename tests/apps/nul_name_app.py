"""A worker app with a task whose name holds a NUL: the worker must refuse to start.

(Before names were validated at registration, this worker logged "ready" and then every
claim failed: PostgreSQL text cannot hold NUL.)
"""

from __future__ import annotations

from pgtaskq import TaskQueue

tq = TaskQueue()


@tq.task(name="reports.build\x00v2")
def build() -> None: ...
