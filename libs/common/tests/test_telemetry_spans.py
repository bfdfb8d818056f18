"""Spans when nothing exports them: the ids still travel (logs, messages, HTTP answers) as the SDK's would."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from pai_common import telemetry
from pai_common.logs import current_trace_id
from pai_common.telemetry import inject_headers, span_from_headers, traceparent, unkept_span

PARENT_TRACE = 0x268C99A1BDB348FFAA7487FEBECCE0C3
PARENT_SPAN = 0xC707EF93C02BDB12


@pytest.fixture(autouse=True)
def no_exporter() -> None:
    # The first setup in a process wins (as in a service); the tests in this process install none.
    assert telemetry.setup_tracing("tests", "none") == "none"


def _header(flags: str = "01") -> dict[str, str]:
    return {"traceparent": f"00-{PARENT_TRACE:032x}-{PARENT_SPAN:016x}-{flags}"}


def test_a_message_span_continues_the_trace_it_carries_with_a_span_id_of_its_own() -> None:
    with span_from_headers("handle x", _header()) as span:
        ctx = span.get_span_context()
        assert ctx.trace_id == PARENT_TRACE
        assert ctx.span_id not in (0, PARENT_SPAN)
        assert ctx.trace_flags.sampled and not ctx.is_remote
        assert not span.is_recording()
        assert trace.get_current_span() is span
        assert current_trace_id.get() == f"{PARENT_TRACE:032x}"
        # What it sends on names this span as the parent.
        sent = inject_headers({})
        assert sent["traceparent"] == f"00-{PARENT_TRACE:032x}-{ctx.span_id:016x}-01"
        assert traceparent() == sent["traceparent"]
    assert trace.get_current_span() is not span
    assert current_trace_id.get() is None


def test_the_parents_unsampled_flag_is_kept() -> None:
    with span_from_headers("handle x", _header("00")) as span:
        assert not span.get_span_context().trace_flags.sampled
        assert inject_headers({})["traceparent"].endswith("-00")


@pytest.mark.parametrize(
    "headers", [None, {}, {"traceparent": "not a traceparent"}, {"traceparent": f"00-{0:032x}-{1:016x}-01"}]
)
def test_without_a_valid_parent_a_new_trace_starts(headers: dict[str, str] | None) -> None:
    seen = set()
    for _ in range(3):
        with span_from_headers("handle x", headers) as span:
            ctx = span.get_span_context()
            assert ctx.is_valid and ctx.trace_flags.sampled
            assert current_trace_id.get() == f"{ctx.trace_id:032x}"
            seen.add(ctx.trace_id)
    assert len(seen) == 3


def test_spans_nest_and_the_outer_one_is_current_again_after_the_inner() -> None:
    with span_from_headers("outer", None) as outer:
        with span_from_headers("inner", inject_headers({})) as inner:
            assert inner.get_span_context().trace_id == outer.get_span_context().trace_id
            assert current_trace_id.get() == f"{outer.get_span_context().trace_id:032x}"
        assert trace.get_current_span() is outer
    assert current_trace_id.get() is None


def test_an_error_in_the_body_still_restores_the_context() -> None:
    with pytest.raises(RuntimeError), span_from_headers("handle x", _header()):
        raise RuntimeError("handler failed")
    assert not trace.get_current_span().get_span_context().is_valid
    assert current_trace_id.get() is None


def test_an_unkept_span_never_has_a_zero_id() -> None:
    parent = trace.SpanContext(PARENT_TRACE, PARENT_SPAN, True, trace.TraceFlags(1))
    ids = {unkept_span(parent).get_span_context().span_id for _ in range(100)}
    assert 0 not in ids and len(ids) == 100
