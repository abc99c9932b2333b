"""Slot threads: each runs one job at a time, a plain function call in its own thread
(an ``async def`` task's coroutine is run to completion there, see ``pgtaskq.worker.coroutines``).

Slots take jobs from one shared hand-off queue filled by the main loop and give each outcome
to the completer; they never touch the database themselves, so a slow or stuck job costs a
thread, never a connection. Anything a task raises, ``SystemExit`` and
``KeyboardInterrupt`` included, fails that attempt and leaves the slot alive.

Each attempt is logged: started and finished at DEBUG (with its duration), a failed attempt
that will be retried at WARNING in one line, the last failed attempt at ERROR with its
traceback. The lines carry the job's fields as ``extra`` (``pgtaskq.logs``).
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
from typing import TYPE_CHECKING, Any

from pgtaskq import forking, storable
from pgtaskq.context import JobContext, set_current
from pgtaskq.errors import Cancelled, FinalFailure, Retry
from pgtaskq.hooks import JobHooks
from pgtaskq.worker.coroutines import run_to_completion
from pgtaskq.worker.held import HeldJob
from pgtaskq.worker.outcome import Outcome

if TYPE_CHECKING:
    from pgtaskq.worker.capacity import Capacity
    from pgtaskq.worker.completer import Completer

log = logging.getLogger("pgtaskq.worker")

JobMiddleware = Callable[[JobContext, Callable[[], Any]], Any]


class Slots:
    """``concurrency`` long-lived threads fed by ``submit()``."""

    def __init__(
        self,
        concurrency: int,
        middlewares: list[JobMiddleware],
        hooks: JobHooks | None,
        *,
        completer: Completer,
        capacity: Capacity,
        wake: Callable[[], None],
    ) -> None:
        self.concurrency = concurrency
        self._middlewares = middlewares
        self._hooks = hooks
        self._completer = completer
        self._capacity = capacity
        self._wake = wake
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
                outcome = run_attempt(job, self._middlewares, self._hooks)
            except BaseException:  # a bug here must cost the job, never the slot
                log.exception("slot failed to run job %d (%s)", job.id, job.task)
                outcome = Outcome.failed(job, traceback.format_exc())
            finally:
                with self._lock:
                    self._busy -= 1
            deliver(job, outcome, self._completer, self._capacity, self._wake)


def deliver(job: HeldJob, outcome: Outcome, completer: Completer, capacity: Capacity,
            wake: Callable[[], None]) -> None:
    """Hand a finished job's outcome straight to the completer and its capacity back to the
    main loop (woken when a refill is due). Both pools end every job through here."""
    job.finished = True
    try:
        completer.add(outcome)
        forking.forget(job.id)
        if capacity.finished(outcome.run_ms / 1000):
            wake()
    except Exception:  # pragma: no cover - the completer's queue does not fail
        log.exception("could not record the outcome of job %d", job.id)


def run_attempt(job: HeldJob, middlewares: list[JobMiddleware],
                hooks: JobHooks | None) -> Outcome:
    """Run ``job`` in the calling thread and return how it ended (never raises for what
    the task does). The slot threads call it; so does an inline test run."""
    context = job.context
    if context.cancel_requested and not context.timed_out:
        # Cancelled while it waited for a slot (prefetched): never start it.
        return Outcome.cancelled(job, "Cancelled: cancel requested before the job started")
    debug = log.isEnabledFor(logging.DEBUG)
    if debug:
        log.debug("job %d (%s) attempt %d/%d started", job.id, job.task, job.attempt,
                  job.max_attempts, extra=_job_fields(job))
    job.running_since = time.monotonic()
    set_current(context)
    try:
        outcome, error, result = _call(job, middlewares)
        if hooks:
            hooks.fire(context, outcome.kind, error, result)
    finally:
        set_current(None)
    if debug or outcome.kind in ("failed", "retry", "discarded"):
        _log_outcome(job, outcome, error)
    return outcome


def _call(job: HeldJob, middlewares: list[JobMiddleware]
          ) -> tuple[Outcome, BaseException | None, Any]:
    """Run the middlewares and the task: (outcome, what it raised, what it returned)."""
    context = job.context
    func = job.func
    try:
        if func is None:  # the worker checks this at the claim; defensive
            return (Outcome.discarded(job, f"LookupError: task {job.task!r} is not "
                                           "registered in this worker"), None, None)
        call: Callable[[], Any] = lambda: _completed(  # noqa: E731
            func(*job.args, **job.kwargs), context)
        for middleware in reversed(middlewares):
            call = _wrap(middleware, context, call)
        try:
            result = call()
        except BaseException:
            if forking.in_forked_child():  # a child the task forked fell back here
                forking.leave_child(job.id, job.task, failed=True)
            raise
        if forking.in_forked_child():
            forking.leave_child(job.id, job.task, failed=False)
    except Retry as exc:
        if context.timed_out:
            return _timed_out(job)
        return Outcome.retry(job, exc.delay, f"Retry: {exc}"), exc, None
    except Cancelled as exc:
        if context.timed_out:
            return _timed_out(job)
        return Outcome.cancelled(job, f"Cancelled: {exc}"), exc, None
    except FinalFailure as exc:
        if context.timed_out:
            return _timed_out(job)
        cause = exc.__cause__ or exc
        return (Outcome.discarded(job, "".join(traceback.format_exception(cause))),
                cause, None)
    except BaseException as exc:
        if context.timed_out:
            return _timed_out(job)
        if context.cancel_requested:
            return (Outcome.cancelled(job, f"cancelled: {type(exc).__name__}: {exc}"),
                    exc, None)
        return Outcome.failed(job, traceback.format_exc()), exc, None
    if context.timed_out:
        return _timed_out(job)
    return Outcome.succeeded(job, _result_json(job, result)), None, result


def _job_fields(job: HeldJob, **more: Any) -> dict[str, Any]:
    """``extra`` of pgtaskq's per-job log lines (JSON logs show them as fields)."""
    return {"job_id": job.id, "task": job.task, "queue": job.queue,
            "attempt": job.attempt, **more}


def _log_outcome(job: HeldJob, outcome: Outcome, error: BaseException | None) -> None:
    """One line per finished attempt: DEBUG normally, WARNING for a failed attempt that
    will be retried, ERROR with the traceback for the last one."""
    fields = _job_fields(job, duration_ms=round(outcome.run_ms, 3), outcome=outcome.kind)
    prefix = f"job {job.id} ({job.task}) attempt {job.attempt}/{job.max_attempts}"
    last = job.attempt >= job.max_attempts or outcome.kind == "discarded"
    if outcome.kind not in ("failed", "discarded") and not (outcome.kind == "retry" and last):
        log.debug("%s %s in %.1f ms", prefix, outcome.kind, outcome.run_ms, extra=fields)
        return
    if not last:
        log.warning("%s failed, will retry: %s", prefix, _one_line(error, outcome),
                    extra=fields)
        return
    fields["outcome"] = "failed for good"
    exc_info = None
    if error is not None and not isinstance(error, TimeoutError):
        exc_info = (type(error), error, error.__traceback__)
    log.error("%s failed, no attempts left: %s", prefix, _one_line(error, outcome),
              exc_info=exc_info, extra=fields)


def _one_line(error: BaseException | None, outcome: Outcome) -> str:
    if error is None or isinstance(error, TimeoutError):
        return (outcome.error or "").strip().splitlines()[-1] if outcome.error else ""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _timed_out(job: HeldJob) -> tuple[Outcome, BaseException | None, Any]:
    message = _timeout_message(job)
    return Outcome.failed(job, message), TimeoutError(message), None


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
    So does JSON that ``jsonb`` refuses (NUL, a lone surrogate from a non-UTF-8 file
    name): the attempt succeeded, and is recorded so, with a repr PostgreSQL can store.
    """
    if result is None:
        return None
    try:
        text = json.dumps(result, allow_nan=False)
    except Exception:
        log.warning("job %d (%s) returned a %s, which is not JSON-serialisable; "
                    "storing its repr", job.id, job.task, type(result).__name__)
    else:
        if not storable.json_is_storable(text, result):
            log.warning("job %d (%s) returned a value PostgreSQL cannot store as JSON (NUL "
                        "or a lone surrogate); storing its repr", job.id, job.task)
        elif len(text) > storable.RESULT_MAX_CHARS:
            log.warning("job %d (%s) returned %d characters of JSON, over pgtaskq's limit "
                        "of %d; storing a note instead", job.id, job.task, len(text),
                        storable.RESULT_MAX_CHARS)
            return json.dumps(f"<result of {len(text)} characters of JSON not stored: over "
                              f"pgtaskq's limit of {storable.RESULT_MAX_CHARS}>")
        else:
            return text
    try:
        text = repr(result)
    except Exception:
        text = f"<unrepresentable {type(result).__name__}>"
    return json.dumps(storable.safe_text(text, storable.RESULT_MAX_CHARS // 2))
