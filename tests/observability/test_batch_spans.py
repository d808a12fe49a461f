"""The batch span rules, with an in-memory exporter: where a batch's span goes, what it
links, what the records it sends on carry, and what costs nothing when nothing is sampled."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import baggage, propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

from mesh.observability import tracing
from mesh.observability.tracing import (
    MAX_LINKS,
    TENANT_BAGGAGE,
    BatchSpan,
    current_exemplar,
    extract_headers,
    inject_headers,
    sampled_context,
)


@dataclass
class Record:
    """What the catalog and mirror read of a Kafka record."""

    topic: str
    partition: int
    offset: int
    headers: list[tuple[str, bytes]]


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(tracing, "_enabled", True)
    monkeypatch.setattr(tracing, "tracer", lambda: provider.get_tracer("test"))
    return memory


def traceparent(trace_id: int, span_id: int, sampled: bool) -> list[tuple[str, bytes]]:
    flags = "01" if sampled else "00"
    return [("traceparent", f"00-{trace_id:032x}-{span_id:016x}-{flags}".encode())]


def test_a_batch_of_one_trace_is_its_child(exporter: InMemorySpanExporter) -> None:
    records = [Record("t", 0, n, traceparent(7, 100, True)) for n in range(3)]
    span = BatchSpan.start("catalog apply", records, "app")
    span.end()
    [finished] = exporter.get_finished_spans()
    assert finished.parent is not None
    assert (finished.context.trace_id, finished.parent.span_id) == (7, 100)
    assert finished.links == ()
    assert finished.kind is trace.SpanKind.CONSUMER
    assert finished.attributes is not None
    assert finished.attributes["messaging.destination.name"] == "t"
    assert finished.attributes["messaging.batch.message_count"] == 3


@given(traces=st.lists(st.tuples(st.integers(1, 50), st.booleans()), min_size=1, max_size=300))
def test_a_batch_of_many_traces_links_every_other_sampled_one(
    traces: list[tuple[int, bool]],
) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tracing, "_enabled", True)
        patch.setattr(tracing, "tracer", lambda: provider.get_tracer("test"))
        records = [
            Record("t", 0, n, traceparent(trace_id, trace_id, sampled))
            for n, (trace_id, sampled) in enumerate(traces)
        ]
        BatchSpan.start("mirror upsert", records, "app").end()
    sampled = [trace_id for trace_id, is_sampled in traces if is_sampled]
    spans = memory.get_finished_spans()
    if not sampled:
        assert spans == ()  # nothing sampled: no span at all
        return
    [span] = spans
    assert span.context.trace_id == sampled[0]
    others = list(dict.fromkeys(t for t in sampled if t != sampled[0]))[:MAX_LINKS]
    assert [link.context.trace_id for link in span.links] == others


def test_records_sent_on_carry_the_batch_span(exporter: InMemorySpanExporter) -> None:
    span = BatchSpan.start("catalog apply", [Record("t", 0, 0, traceparent(9, 5, True))], "app")
    headers = span.headers()
    span.end()
    context = extract_headers(headers)
    assert context is not None
    [finished] = exporter.get_finished_spans()
    assert (context.trace_id, context.span_id) == (9, finished.context.span_id)


def test_tracing_off_costs_no_span_and_no_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_enabled", False)
    span = BatchSpan.start("catalog apply", [Record("t", 0, 0, traceparent(9, 5, True))], "app")
    assert span.span is None
    assert span.headers() == []
    assert inject_headers("default") == []  # no current span


def test_publish_headers_carry_the_span_and_the_tenant_as_baggage() -> None:
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("publish") as current:
        headers = inject_headers("beta")
        assert current_exemplar() == {
            "trace_id": format(current.get_span_context().trace_id, "032x")
        }
    assert current_exemplar() is None
    context = sampled_context(headers)
    assert context is not None
    assert context.span_id == current.get_span_context().span_id
    carried = propagate.extract({k: v.decode() for k, v in headers})
    assert baggage.get_baggage(TENANT_BAGGAGE, carried) == "beta"


@pytest.mark.parametrize(
    ("headers", "found"),
    [
        (None, False),
        ([], False),
        ([("dictamesh.tenant", b"default")], False),
        (traceparent(3, 4, False), False),
        (traceparent(3, 4, True), True),
        ([("traceparent", b"00-zz-not-a-traceparent-01")], False),
    ],
)
def test_only_a_valid_sampled_traceparent_is_a_context(
    headers: list[tuple[str, bytes]] | None, found: bool
) -> None:
    context = sampled_context(headers)
    assert (context is not None) is found
    if context is not None:
        assert isinstance(context, SpanContext)
        assert context.trace_flags == TraceFlags.SAMPLED
