"""OpenTelemetry tracing across the queue: the job's run continues the enqueuer's trace.

::

    from pgtaskq.contrib import opentelemetry as pgtaskq_otel

    pgtaskq_otel.instrument(tq)     # in the web process and in the worker's app module

In the producer, ``tq.enqueue()``, ``tq.enqueue_many()`` and ``task.enqueue()`` run in a
``pgtaskq.enqueue`` span (kind PRODUCER) and, when a trace is active, store that span's
context (W3C ``traceparent``/``tracestate``, through the globally configured propagator)
in ``job_trace_context``, in the same transaction as the job: with ``conn=`` in the
caller's, otherwise in one of the queue's own. In the worker, each attempt runs in a
``pgtaskq.run`` span (kind CONSUMER) whose parent is that context, so the job appears in
the request's trace; a failure is recorded on the span with status ERROR (``Retry`` and
cancellations are not errors). Reading the context costs the worker one indexed lookup
per job, only when this is installed.

Needs ``pip install 'pgtaskq[opentelemetry]'`` (the API; an SDK and an exporter are the
application's choice, as always with OpenTelemetry).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "pgtaskq.contrib.opentelemetry needs opentelemetry-api: "
        "pip install 'pgtaskq[opentelemetry]'"
    ) from exc

from pgtaskq._version import __version__
from pgtaskq.context import JobContext
from pgtaskq.errors import Cancelled, Retry
from pgtaskq.queue import TaskQueue

STORE = """
INSERT INTO {schema}.job_trace_context (job_id, carrier)
SELECT unnest(%(ids)s::bigint[]), %(carrier)s::jsonb
ON CONFLICT (job_id) DO NOTHING
"""
"""A deduplicated enqueue returns the id of a job enqueued earlier: its context stays."""

LOAD = "SELECT carrier FROM {schema}.job_trace_context WHERE job_id = %(id)s"


def instrument(tq: TaskQueue, tracer_provider: Any = None) -> None:
    """Trace enqueues and job runs of ``tq`` (idempotent)."""
    if getattr(tq, "_pgtaskq_otel", False):
        return
    tracer = trace.get_tracer("pgtaskq", __version__, tracer_provider)
    tq.enqueue = _traced_enqueue(tq, tracer, tq.enqueue)  # type: ignore[method-assign]
    tq.enqueue_many = _traced_enqueue_many(  # type: ignore[method-assign]
        tq, tracer, tq.enqueue_many)
    tq.add_job_middleware(_run_in_span(tq, tracer))
    tq._pgtaskq_otel = True  # type: ignore[attr-defined]


def _carrier() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def _in_transaction(tq: TaskQueue, conn: Any, write: Callable[[Any], Any]) -> Any:
    """``write(conn)`` on the caller's connection, or in a transaction of the queue's own
    pool, so the job and its trace context are committed together."""
    conn = tq.connection_for_enqueue(conn)
    if conn is not None:
        return write(conn)
    with tq.connection() as own, own.transaction():
        return write(own)


def _store(tq: TaskQueue, conn: Any, ids: list[int], carrier: dict[str, str]) -> None:
    if ids and carrier:
        tq._run(STORE, {"ids": ids, "carrier": json.dumps(carrier)}, conn)


def _traced_enqueue(tq: TaskQueue, tracer: Any, enqueue: Callable[..., int]
                    ) -> Callable[..., int]:
    @functools.wraps(enqueue)
    def traced(task_name: str, *args: Any, conn: Any = None, **kwargs: Any) -> int:
        with tracer.start_as_current_span(
                "pgtaskq.enqueue", kind=trace.SpanKind.PRODUCER,
                attributes={"messaging.system": "pgtaskq", "pgtaskq.task": task_name,
                            "messaging.operation.type": "send"}) as span:
            carrier = _carrier()

            def write(on: Any) -> int:
                job_id = enqueue(task_name, *args, conn=on, **kwargs)
                _store(tq, on, [job_id], carrier)
                return job_id

            job_id = _in_transaction(tq, conn, write) if carrier else \
                enqueue(task_name, *args, conn=conn, **kwargs)
            span.set_attribute("pgtaskq.job_id", job_id)
            return job_id

    return traced


def _traced_enqueue_many(tq: TaskQueue, tracer: Any, enqueue_many: Callable[..., list[int]]
                         ) -> Callable[..., list[int]]:
    @functools.wraps(enqueue_many)
    def traced(task_name: str, jobs: Any, *, conn: Any = None) -> list[int]:
        with tracer.start_as_current_span(
                "pgtaskq.enqueue", kind=trace.SpanKind.PRODUCER,
                attributes={"messaging.system": "pgtaskq", "pgtaskq.task": task_name,
                            "messaging.operation.type": "send"}) as span:
            carrier = _carrier()

            def write(on: Any) -> list[int]:
                ids = enqueue_many(task_name, jobs, conn=on)
                _store(tq, on, ids, carrier)
                return ids

            ids = _in_transaction(tq, conn, write) if carrier else \
                enqueue_many(task_name, jobs, conn=conn)
            span.set_attribute("messaging.batch.message_count", len(ids))
            return ids

    return traced


def _run_in_span(tq: TaskQueue, tracer: Any) -> Callable[[JobContext, Callable[[], Any]], Any]:
    def otel_job_middleware(job: JobContext, call_next: Callable[[], Any]) -> Any:
        rows = tq._run(LOAD, {"id": job.id})
        parent = propagate.extract(rows[0][0]) if rows and rows[0][0] else \
            otel_context.Context()
        attributes = {"messaging.system": "pgtaskq", "messaging.operation.type": "process",
                      "messaging.destination.name": job.queue, "pgtaskq.task": job.task,
                      "pgtaskq.job_id": job.id, "pgtaskq.attempt": job.attempt,
                      "pgtaskq.max_attempts": job.max_attempts}
        with tracer.start_as_current_span(
                "pgtaskq.run", context=parent, kind=trace.SpanKind.CONSUMER,
                attributes=attributes, record_exception=False,
                set_status_on_exception=False) as span:
            try:
                result = call_next()
            except (Retry, Cancelled) as exc:
                span.set_attribute("pgtaskq.outcome", type(exc).__name__.lower())
                raise
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR,
                                             f"{type(exc).__name__}: {exc}"))
                raise
            if job.timed_out:
                span.set_status(trace.Status(trace.StatusCode.ERROR, "timed out"))
            return result

    return otel_job_middleware
