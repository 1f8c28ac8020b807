"""OpenTelemetry tracing: every request gets a real trace id; spans are exported only where configured.

Export follows the standard variables, read by the OpenTelemetry libraries themselves: OTLP over HTTP when
`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (unless `OTEL_TRACES_EXPORTER` is
`none`), nothing otherwise; `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name the service. Spans:
`<METHOD> <route>` per request (HTTP semantic conventions), `sluice.job.submit` with `sluice.job.parse` and
`sluice.job.analyse`, and `sluice.run` with `sluice.run.check`, `.queue`, `.execute`, `.output_control`,
`.meter` and `.audit`. The trace id is stored in audit records and usage events and written to JSON logs.

The request span always exists (it makes the trace id). When nothing exports spans, it is a `RequestTracer`'s
non-recording span with the ids the SDK would give it (its attributes, name and status would go nowhere); the spans
inside a request are then not made at all: `Tracing.spans` is a `ContextTracer`, which makes none and leaves the
request span current (about 60 Python calls saved per span, nine spans per run).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.environment_variables import OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator


class ContextTracer(trace.Tracer):
    """A tracer whose spans record nothing and never become current: inside a request, the request's span stays
    current, so trace ids (and span ids in log lines) are those of the request. For when no span is exported."""

    def start_span(self, name: str, context: Context | None = None, *args: Any, **kwargs: Any) -> trace.Span:
        return trace.NonRecordingSpan(trace.get_current_span(context).get_span_context())

    @contextmanager
    def start_as_current_span(self, name: str, context: Context | None = None,  # type: ignore[override]
                              *args: Any, **kwargs: Any) -> Iterator[trace.Span]:
        yield trace.NonRecordingSpan(trace.get_current_span(context).get_span_context())


class RequestTracer(ContextTracer):
    """The request span's tracer when nothing exports spans: a non-recording span with a fresh span id and the
    caller's trace (a `traceparent` header), or a fresh trace id, from the provider's id generator, as the SDK's
    tracer would make them (its span would record attributes that nothing exports)."""

    def __init__(self, ids: IdGenerator) -> None:
        self.ids = ids

    def start_span(self, name: str, context: Context | None = None, *args: Any, **kwargs: Any) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id, flags, state = parent.trace_id, parent.trace_flags, parent.trace_state
        else:
            trace_id, flags, state = self.ids.generate_trace_id(), trace.TraceFlags(trace.TraceFlags.SAMPLED), None
        return trace.NonRecordingSpan(trace.SpanContext(trace_id, self.ids.generate_span_id(), is_remote=False,
                                                        trace_flags=flags, trace_state=state))


@dataclass
class Tracing:
    """The app's tracer and its provider (flushed and shut down with the app); `requests` makes the request span (a
    `RequestTracer` when nothing exports spans), `spans` the spans inside a request (a `ContextTracer` then)."""

    tracer: trace.Tracer
    provider: TracerProvider
    exporting: bool
    spans: trace.Tracer
    requests: trace.Tracer

    def shutdown(self) -> None:
        """Flush queued spans and stop exporting."""
        self.provider.shutdown()


def otlp_configured() -> bool:
    """True when the standard OTEL_* variables ask for OTLP export of traces."""
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(os.environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or os.environ.get(OTEL_EXPORTER_OTLP_ENDPOINT))


def make_tracing(exporter: SpanExporter | None = None) -> Tracing:
    """A tracer that always makes real trace ids; spans go to `exporter` (tests, embedders) as each ends, and
    to OTLP/HTTP in batches when the OTEL_* variables name an endpoint. No global provider is set, so several
    apps can coexist in one process."""
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": "sluice"}))
    exporting = False
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        exporting = True
    if otlp_configured():
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        exporting = True
    tracer = provider.get_tracer("sluice")
    return Tracing(tracer=tracer, provider=provider, exporting=exporting,
                   spans=tracer if exporting else ContextTracer(),
                   requests=tracer if exporting else RequestTracer(provider.id_generator))


def current_trace_id() -> str | None:
    """The trace id of the current span as 32 hex digits, or None outside a traced request."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None


def current_span_id() -> str | None:
    """The span id of the current span as 16 hex digits, or None."""
    context = trace.get_current_span().get_span_context()
    return trace.format_span_id(context.span_id) if context.is_valid else None


def phase_spans(tracer: trace.Tracer, phases: Sequence[tuple[str, int, int]], prefix: str = "sluice.job.",
                attributes: Mapping[str, str | int | float | bool] | None = None) -> None:
    """Child spans of the current span for phases timed elsewhere ((name, start, end) in epoch ns), e.g. the
    SQL analysis in `policy` or the run in a sandbox worker, which have no tracer of their own."""
    for name, start, end in phases:
        span = tracer.start_span(prefix + name, start_time=start, attributes=attributes)
        span.end(end_time=max(start, end))
