"""Slot threads: each runs one job at a time, a plain function call in its own thread
(an ``async def`` task's coroutine is run to completion there, see ``pgtaskq.coroutines``).

Slots take jobs from one shared hand-off queue filled by the main loop and give each outcome
to the completer; they never touch the database themselves, so a slow or stuck job costs a
thread, never a connection. Anything a task raises, ``SystemExit`` and
``KeyboardInterrupt`` included, fails that attempt and leaves the slot alive.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from types import CoroutineType
from typing import Any

from pgtaskq.completer import Outcome
from pgtaskq.context import JobContext, set_current
from pgtaskq.coroutines import run_to_completion
from pgtaskq.errors import Cancelled, FinalFailure, Retry
from pgtaskq.held import HeldJob

log = logging.getLogger("pgtaskq.worker")

JobMiddleware = Callable[[JobContext, Callable[[], Any]], Any]


class Slots:
    """``concurrency`` long-lived threads fed by ``submit()``."""

    def __init__(
        self,
        concurrency: int,
        resolve: Callable[[str], Callable[..., Any] | None],
        middlewares: list[JobMiddleware],
        on_outcome: Callable[[HeldJob, Outcome], None],
    ) -> None:
        self.concurrency = concurrency
        self._resolve = resolve
        self._middlewares = middlewares
        self._on_outcome = on_outcome
        self._handoff: queue.SimpleQueue[HeldJob | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"pgtaskq-slot-{n}", daemon=True)
            for n in range(concurrency)
        ]
        self._lock = threading.Lock()
        self._busy = 0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    @property
    def busy(self) -> int:
        """Slots running a job right now."""
        with self._lock:
            return self._busy

    def submit(self, job: HeldJob) -> None:
        self._handoff.put(job)

    def take_waiting(self) -> list[HeldJob]:
        """Remove and return the jobs not yet started (for handing them back)."""
        waiting: list[HeldJob] = []
        while True:
            try:
                item = self._handoff.get_nowait()
            except queue.Empty:
                return waiting
            if item is not None:
                waiting.append(item)

    def stop(self) -> None:
        """Ask every slot to exit after its current job (the threads are daemons)."""
        for _ in self._threads:
            self._handoff.put(None)

    def join(self, timeout: float) -> bool:
        """Wait for the slots to exit; False if some still run after ``timeout``."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _loop(self) -> None:
        while True:
            job = self._handoff.get()
            if job is None:
                return
            with self._lock:
                self._busy += 1
            try:
                outcome = self._run(job)
            except BaseException:  # a bug here must cost the job, never the slot
                log.exception("slot failed to run job %d (%s)", job.id, job.task)
                outcome = Outcome.failed(job, traceback.format_exc())
            finally:
                with self._lock:
                    self._busy -= 1
            job.finished = True
            try:
                self._on_outcome(job, outcome)
            except Exception:  # pragma: no cover - the completer's queue does not fail
                log.exception("could not record the outcome of job %d", job.id)

    def _run(self, job: HeldJob) -> Outcome:
        context = job.context
        if context.cancel_requested and not context.timed_out:
            # Cancelled while it waited for a slot (prefetched): never start it.
            return Outcome.cancelled(job, "Cancelled: cancel requested before the job started")
        func = self._resolve(job.task)
        job.running_since = time.monotonic()
        set_current(context)
        try:
            if func is None:  # the claim only leases registered tasks; defensive
                raise LookupError(f"task {job.task!r} is not registered in this worker")
            call: Callable[[], Any] = lambda: _completed(  # noqa: E731
                func(*job.args, **job.kwargs), context)
            for middleware in reversed(self._middlewares):
                call = _wrap(middleware, context, call)
            result = call()
        except Retry as exc:
            if context.timed_out:
                return Outcome.failed(job, _timeout_message(job))
            return Outcome.retry(job, exc.delay, f"Retry: {exc}")
        except Cancelled as exc:
            if context.timed_out:
                return Outcome.failed(job, _timeout_message(job))
            return Outcome.cancelled(job, f"Cancelled: {exc}")
        except FinalFailure as exc:
            if context.timed_out:
                return Outcome.failed(job, _timeout_message(job))
            cause = exc.__cause__ or exc
            log.warning("job %d (%s) failed for good on attempt %d: %s: %s", job.id, job.task,
                        job.attempt, type(cause).__name__, cause)
            return Outcome.discarded(job, "".join(traceback.format_exception(cause)))
        except BaseException as exc:
            if context.timed_out:
                return Outcome.failed(job, _timeout_message(job))
            if context.cancel_requested:
                return Outcome.cancelled(job, f"cancelled: {type(exc).__name__}: {exc}")
            log.warning("job %d (%s) attempt %d/%d failed: %s: %s", job.id, job.task,
                        job.attempt, job.max_attempts, type(exc).__name__,
                        str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            return Outcome.failed(job, traceback.format_exc())
        finally:
            set_current(None)
        if context.timed_out:
            return Outcome.failed(job, _timeout_message(job))
        return Outcome.succeeded(job, _result_json(job, result))


def _completed(value: Any, context: JobContext) -> Any:
    """What the task returned, with a coroutine (``async def`` tasks) run to completion
    here, inside the middlewares, so they wrap the whole run and not just its creation."""
    if type(value) is CoroutineType:
        return run_to_completion(value, context)
    return value


def _wrap(middleware: JobMiddleware, context: JobContext,
          call_next: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: middleware(context, call_next)


def _timeout_message(job: HeldJob) -> str:
    return f"TimeoutError: job {job.id} ({job.task}) exceeded its timeout of {job.timeout}s"


def _result_json(job: HeldJob, result: Any) -> str | None:
    """The result as JSON text; its repr (with a warning) when it is not serialisable.

    Anything json.dumps raises (RecursionError on deep nesting included) falls back to the
    repr, and a repr that raises to a placeholder: a task's return value never fails it.
    """
    if result is None:
        return None
    try:
        text = json.dumps(result, allow_nan=False)
        if "\\u0000" not in text:  # jsonb refuses NUL characters: keep the repr then
            return text
    except Exception:
        log.warning("job %d (%s) returned a %s, which is not JSON-serialisable; "
                    "storing its repr", job.id, job.task, type(result).__name__)
    try:
        text = repr(result)
    except Exception:
        text = f"<unrepresentable {type(result).__name__}>"
    return json.dumps(text)
