"""OpenTelemetry across the queue: a trace id passes from enqueue to the job's span.

The producer side runs here with the SDK's in-memory exporter; the worker is a real
process (``tests/apps/traced.py``) whose spans are written to a file.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from worker_helpers import FAST

from pgtaskq import TaskQueue
from pgtaskq.testing import wait_until
from pgtaskq.worker.pruner import Pruner

pytest.importorskip("opentelemetry.sdk", reason="pip install opentelemetry-sdk (dev extra)")
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from pgtaskq.contrib import opentelemetry as pgtaskq_otel


@pytest.fixture
def traced(pgtaskq_dsn, tq):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    producer = TaskQueue(pgtaskq_dsn, schema=tq.schema)
    pgtaskq_otel.instrument(producer, tracer_provider=provider)
    yield producer, provider.get_tracer("tests"), exporter
    producer.close()


def _spans(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() \
        else []


def test_a_trace_passes_from_enqueue_to_the_jobs_span(
        pgtaskq_dsn, tq, db, traced, worker_process, tmp_path) -> None:
    producer, tracer, exporter = traced
    with tracer.start_as_current_span("POST /signup") as request:
        ok_id = producer.enqueue("traced.ok", args=[1])
        with psycopg.connect(pgtaskq_dsn) as conn:  # the caller's transaction
            fail_id = producer.enqueue("traced.fail", conn=conn, max_attempts=1)
            stored = db.execute(f'SELECT count(*) FROM "{tq.schema}".job_trace_context '
                                "WHERE job_id = %s", (fail_id,)).fetchone()[0]
            assert stored == 0  # not committed yet: the context commits with the job
            conn.commit()
    trace_id = f"{request.get_span_context().trace_id:032x}"
    enqueues = {span.attributes["pgtaskq.job_id"]: span for span in exporter.get_finished_spans()
                if span.name == "pgtaskq.enqueue"}
    assert set(enqueues) == {ok_id, fail_id}
    assert all(f"{s.context.trace_id:032x}" == trace_id for s in enqueues.values())

    spans_file = tmp_path / "spans.jsonl"
    worker = worker_process("apps.traced:tq", *FAST,
                            env={"TRACED_SPANS_FILE": str(spans_file)})
    runs = wait_until(lambda: (r := [s for s in _spans(spans_file)
                                     if s["name"] == "pgtaskq.run"]) and len(r) == 2 and r,
                      30, what="two job spans")
    assert worker.stop() == 0
    by_job = {span["attributes"]["pgtaskq.job_id"]: span for span in runs}
    for job_id in (ok_id, fail_id):
        run = by_job[job_id]
        assert run["trace_id"] == trace_id  # the request's trace continues in the worker
        assert run["parent_id"] == f"{enqueues[job_id].context.span_id:016x}"
        assert run["kind"] == "CONSUMER"
        assert run["attributes"]["pgtaskq.attempt"] == 1
    assert by_job[ok_id]["status"] == "UNSET"
    assert by_job[fail_id]["status"] == "ERROR" and "exception" in by_job[fail_id]["events"]


def test_jobs_enqueued_without_instrumentation_run_in_a_root_span(
        tq, worker_process, tmp_path) -> None:
    job_id = tq.enqueue("traced.ok")  # a producer without pgtaskq_otel: no stored context
    spans_file = tmp_path / "spans.jsonl"
    worker = worker_process("apps.traced:tq", *FAST,
                            env={"TRACED_SPANS_FILE": str(spans_file)})
    run = wait_until(lambda: [s for s in _spans(spans_file) if s["name"] == "pgtaskq.run"],
                     30, what="the job's span")[0]
    assert worker.stop() == 0
    assert run["parent_id"] is None and run["attributes"]["pgtaskq.job_id"] == job_id


def test_the_pruner_deletes_contexts_of_finished_jobs(tq, db, traced) -> None:
    producer, tracer, _ = traced
    with tracer.start_as_current_span("batch"):
        ids = producer.enqueue_many("traced.ok", [{"args": [n]} for n in range(3)])
    table = f'"{tq.schema}".job_trace_context'
    assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 3
    db.execute(f"UPDATE {table} SET created_at = now() - interval '1 hour'")
    db.execute(f'DELETE FROM "{tq.schema}".jobs WHERE id = %s', (ids[0],))  # "finished"
    deleted = Pruner(tq.pool, tq.schema).run_once()
    assert deleted["trace contexts"] == 1
    left = {row[0] for row in db.execute(f"SELECT job_id FROM {table}")}
    assert left == set(ids[1:])  # still queued: their next attempt continues the trace
