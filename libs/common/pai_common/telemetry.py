"""OpenTelemetry tracing whose W3C context travels in NATS headers, so one trace follows a job.

Where spans go is chosen once per process, from the environment:

* ``PAI_OTEL_EXPORTER`` (``none``, ``console`` or ``otlp``) when set;
* otherwise the standard ``OTEL_TRACES_EXPORTER`` (same values);
* otherwise ``otlp`` when an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and ``none`` when not.

The OTLP exporter speaks HTTP/protobuf and reads the standard ``OTEL_EXPORTER_OTLP_*`` variables
(endpoint, headers, timeout, compression); the batch processor reads ``OTEL_BSP_*``; the sampler
``OTEL_TRACES_SAMPLER``; the resource ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (the
service name defaults to ``pai-<service>``). While spans are exported, PyMongo's commands become spans
too, and the gateway's requests get FastAPI's instrumentation. Without an exporter every message and
request still gets a span of its own (its trace id goes into the logs, across the bus and back to HTTP
clients), but a non-recording one with the ids the SDK would give it: nothing would read an SDK span, and
making one cost about 45 µs (FastAPI's instrumentation, left off then, about 0.7 ms of CPU per request).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

from pai_common.logs import current_trace_id

log = logging.getLogger(__name__)

EXPORTERS = ("none", "console", "otlp")
OTLP_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_provider: TracerProvider | None = None
_exporter = "none"
_tracer: trace.Tracer | None = None


class TracingConfigError(ValueError):
    """The environment names an exporter this platform does not have."""


def choose_exporter(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The exporter the settings and the ``OTEL_*`` environment ask for (see the module's docstring)."""
    env = os.environ if environ is None else environ
    name = explicit or env.get("OTEL_TRACES_EXPORTER") or ""
    if not name:
        name = "otlp" if any(env.get(v) for v in OTLP_ENDPOINT_VARS) else "none"
    name = name.strip().lower()
    if name not in EXPORTERS:
        raise TracingConfigError(f"unknown trace exporter {name!r}: use one of {', '.join(EXPORTERS)}")
    return name


def setup_tracing(service: str, exporter: str | None = None) -> str:
    """Install a tracer provider once per process; returns the exporter in use."""
    global _provider, _exporter, _tracer
    chosen = choose_exporter(exporter)
    if _provider is not None:
        return _exporter
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: f"pai-{service}"}
    provider = TracerProvider(resource=Resource.create(attributes))
    if chosen == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif chosen == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _instrument_pymongo()
    trace.set_tracer_provider(provider)
    _provider, _exporter = provider, chosen
    _tracer = provider.get_tracer("pai")
    return chosen


def exporting() -> bool:
    """Whether this process sends its spans anywhere (instrumentation worth its cost is on then)."""
    return _exporter != "none"


def _instrument_pymongo() -> None:
    from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

    instrumentor = PymongoInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def shutdown_tracing() -> None:
    """Send what is still batched (a stopping service's last spans)."""
    if _provider is not None:
        try:
            _provider.force_flush(timeout_millis=5000)
        except Exception as exc:  # an exporter that cannot reach its collector must not block a stop
            log.warning("spans not flushed", extra={"error": repr(exc)})


def tracer() -> trace.Tracer:
    # Made once: the SDK builds a new tracer and scope on every ``get_tracer``.
    return _tracer if _tracer is not None else trace.get_tracer("pai")


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    propagate.inject(headers)
    return headers


def traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None outside any span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def span_from_headers(
    name: str, headers: Mapping[str, str] | None, kind: trace.SpanKind = trace.SpanKind.INTERNAL
) -> Iterator[trace.Span]:
    """Continue the trace a message carries (or start one), and expose its id to the logs."""
    ctx = propagate.extract(dict(headers or {}))
    if _provider is not None and _exporter == "none":
        # Nothing keeps the span: only its ids matter (logs, messages sent, the HTTP answer). An SDK
        # span that no processor reads cost about 45 µs per message handled (issue 17).
        span: trace.Span = unkept_span(trace.get_current_span(ctx).get_span_context())
        token = otel_context.attach(trace.set_span_in_context(span, ctx))
        log_token = current_trace_id.set(f"{span.get_span_context().trace_id:032x}")
        try:
            yield span
        finally:
            current_trace_id.reset(log_token)
            otel_context.detach(token)
        return
    token = otel_context.attach(ctx)
    try:
        with tracer().start_as_current_span(name, kind=kind) as span:
            trace_id = span.get_span_context().trace_id
            log_token = current_trace_id.set(f"{trace_id:032x}" if trace_id else None)
            try:
                yield span
            finally:
                current_trace_id.reset(log_token)
    finally:
        otel_context.detach(token)


def unkept_span(parent: trace.SpanContext) -> trace.NonRecordingSpan:
    """A child of ``parent`` (a new trace when it is not valid) with the ids and flags the SDK's
    default sampler would give it, recorded nowhere."""
    span_id = random.getrandbits(64) or 1
    if parent.is_valid:
        context = trace.SpanContext(parent.trace_id, span_id, False, parent.trace_flags, parent.trace_state)
    else:
        trace_id = random.getrandbits(128) or 1
        context = trace.SpanContext(trace_id, span_id, False, trace.TraceFlags(trace.TraceFlags.SAMPLED))
    return trace.NonRecordingSpan(context)
