"""Run a task's coroutine to completion in the slot thread that took its job.

``@tq.task async def f()`` returns a coroutine when called; a slot that stored that object
as the result would mark the job succeeded without running a line of it. Each job gets its
own event loop (``asyncio.run``): a job cannot leave tasks or callbacks behind for the
next one, and a slot that runs plain functions pays nothing.

Cancellation and timeouts reach the coroutine the way they reach a plain function (the
job's context reports them, ``check_cancelled()`` raises), and more: the worker's cancel
request cancels the asyncio task, so a task waiting in ``await`` stops at once instead of
at its next check. A coroutine that swallows ``CancelledError`` and returns is treated as
a plain function that ignored the request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from pgtaskq.context import JobContext, set_current


def run_to_completion(coroutine: Coroutine[Any, Any, Any], context: JobContext) -> Any:
    """Run ``coroutine`` on a fresh event loop in this thread; return what it returns."""
    return asyncio.run(_supervised(coroutine, context))


async def _supervised(coroutine: Coroutine[Any, Any, Any], context: JobContext) -> Any:
    loop = asyncio.get_running_loop()
    # asyncio.run copies the contextvars, not the thread-local job: set it in this thread
    # again (it is the same thread) so current_job() works inside the coroutine.
    set_current(context)
    task = loop.create_task(coroutine)

    def cancel_from_any_thread() -> None:
        # RuntimeError: the loop has closed, so the coroutine is over anyway
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(task.cancel)

    context.add_cancel_callback(cancel_from_any_thread)
    try:
        return await task
    finally:
        context.remove_cancel_callback(cancel_from_any_thread)
