"""A traced worker application: the OpenTelemetry SDK with an exporter that writes each
finished span as a JSON line to ``$TRACED_SPANS_FILE``, and pgtaskq's instrumentation."""

from __future__ import annotations

import json
import os

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from pgtaskq import TaskQueue
from pgtaskq.contrib import opentelemetry as pgtaskq_otel


class FileExporter(SpanExporter):
    def export(self, spans):
        with open(os.environ["TRACED_SPANS_FILE"], "a") as out:
            for span in spans:
                out.write(json.dumps({
                    "name": span.name, "kind": span.kind.name,
                    "trace_id": f"{span.context.trace_id:032x}",
                    "span_id": f"{span.context.span_id:016x}",
                    "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                    "attributes": dict(span.attributes or {}),
                    "status": span.status.status_code.name,
                    "events": [event.name for event in span.events],
                }) + "\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(FileExporter()))

tq = TaskQueue()
pgtaskq_otel.instrument(tq, tracer_provider=provider)


@tq.task(name="traced.ok")
def ok(value=None):
    return value


@tq.task(name="traced.fail", max_attempts=1)
def fail():
    raise ValueError("traced failure")
