"""The interop tasks (tasks.py) with OpenTelemetry: Celery instrumented by
opentelemetry-instrumentation-celery, every finished span written as one JSON line to the file
OTEL_SPANS_FILE names (the interop test reads them). Run the worker as `celery -A traced worker`."""
import json
import os

from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from tasks import app  # noqa: F401  (the Celery app the worker runs)


class JsonLinesExporter(SpanExporter):
    """Appends each finished span to a file, one JSON object a line."""

    def __init__(self, path):
        self.path = path

    def export(self, spans):
        with open(self.path, 'a', encoding='utf-8') as out:
            for span in spans:
                parent = span.parent
                out.write(json.dumps({
                    'name': span.name,
                    'kind': span.kind.name,
                    'trace_id': format(span.context.trace_id, '032x'),
                    'span_id': format(span.context.span_id, '016x'),
                    'parent_span_id': format(parent.span_id, '016x') if parent else None,
                    'attributes': {k: v if isinstance(v, (str, int, float, bool)) else list(v) for k, v in span.attributes.items()},
                }) + '\n')
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ['OTEL_SPANS_FILE'])))
trace.set_tracer_provider(provider)
CeleryInstrumentor().instrument()
