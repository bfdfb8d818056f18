"""OpenTelemetry tracing whose W3C context travels in NATS headers, so one trace follows a job."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from pai_common.logs import current_trace_id

_configured = False


def setup_tracing(service: str, exporter: str = "none") -> None:
    """Install a tracer provider once per process; spans are exported only when asked."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"pai-{service}"}))
    if exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True


def tracer() -> trace.Tracer:
    return trace.get_tracer("pai")


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    propagate.inject(headers)
    return headers


@contextmanager
def span_from_headers(name: str, headers: Mapping[str, str] | None) -> Iterator[trace.Span]:
    """Continue the trace a message carries (or start one), and expose its id to the logs."""
    ctx = propagate.extract(dict(headers or {}))
    token = otel_context.attach(ctx)
    try:
        with tracer().start_as_current_span(name) as span:
            trace_id = span.get_span_context().trace_id
            log_token = current_trace_id.set(f"{trace_id:032x}" if trace_id else None)
            try:
                yield span
            finally:
                current_trace_id.reset(log_token)
    finally:
        otel_context.detach(token)
