"""OpenTelemetry tracing for the governed path, switched by SLUICE_TRACING_ENABLED.

The exporter and resource come from the standard OTEL_* variables, read by the OpenTelemetry libraries
themselves (e.g. OTEL_SERVICE_NAME). Spans: `sluice.job.submit` (analysis), `sluice.run` with children
`sluice.run.check`, `sluice.run.execute` and `sluice.run.record`.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)


def make_tracer(enabled: bool, exporter: SpanExporter | None = None) -> trace.Tracer:
    """A tracer for the app: a no-op one when disabled, else one exporting through `exporter`.

    Without an explicit exporter, OTLP is used when its exporter package is installed, else the console, both
    batched. An explicit exporter (embedders, tests) receives each span as it ends. No global provider is
    set, so several apps can coexist in one process.
    """
    if not enabled:
        return trace.NoOpTracer()
    provider = TracerProvider(resource=Resource.create({"service.name": "sluice"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider.get_tracer("sluice")
    batched: SpanExporter
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        batched = OTLPSpanExporter()
    except ImportError:
        batched = ConsoleSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(batched))
    return provider.get_tracer("sluice")
