"""Traces with OpenTelemetry: set up from the standard ``OTEL_*`` variables, off when unset.

A change is followed from its source to GraphQL: the adapter's poll and publish put a W3C
``traceparent`` (and the tenant as baggage) in each Kafka record's headers; the catalog
and the mirror apply events in batches of up to thousands from many traces, so each makes
one span per batch, a child of the batch's trace when all its sampled events share one,
else a root with a link to each distinct sampled context (a span per event would cost as
much as applying the event). Faust bypasses aiokafka's ``getone``/``getmany``, so the
consumer side is extracted here, not by an aiokafka instrumentation.

A GraphQL request is a trace too: the HTTP server span (:func:`server_middleware`: the
aiohttp-server instrumentation's span, its attributes computed only once sampled), the
operation span, its loader batches, the peer calls (the aiohttp client instrumentation
propagates the context over the hop; the peer's server span continues it), and Redis and
Postgres spans from their instrumentations.

Nothing here costs anything when tracing is off: the API's tracer is a no-op and no
middleware or instrumentation is installed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.trace import Link, SpanContext, Tracer

__all__ = [
    "TENANT_BAGGAGE",
    "BatchSpan",
    "batch_parent",
    "configure_tracing",
    "current_exemplar",
    "extract_headers",
    "inject_headers",
    "sampled_context",
    "server_middleware",
    "tracer",
    "tracing_enabled",
]

log = logging.getLogger(__name__)

TRACER_NAME = "dictamesh"
TENANT_BAGGAGE = "dictamesh.tenant"
DEFAULT_RATIO = 0.01
"""Without ``OTEL_TRACES_SAMPLER``: 1 % of new traces, and every trace a caller sampled.

A worker answers thousands of reads a second, so 1 % still records dozens of traces a
second per worker; a recorded request costs ~165 µs of worker CPU (the SDK span, its
export), twice a cached read, so 10 % would cost a cached read a fifth of its throughput
(README: what tracing costs). Raise it with ``OTEL_TRACES_SAMPLER_ARG``."""
MAX_LINKS = 128
"""Links on one batch span at most (distinct traces beyond it are counted, not linked)."""

_enabled = False


def tracing_enabled() -> bool:
    """True once :func:`configure_tracing` installed an exporting provider."""
    return _enabled


_tracer: Tracer | None = None


def tracer() -> Tracer:
    """The product's tracer (a no-op one while tracing is off)."""
    # Once tracing is on, the same SDK tracer every time: the provider builds a new one
    # (scope, attributes) per ``get_tracer`` call, a few µs on every request.
    global _tracer
    if _tracer is not None:
        return _tracer
    found = trace.get_tracer(TRACER_NAME)
    if _enabled:
        _tracer = found
    return found


def _wanted(environ: os._Environ[str] | dict[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "none":
        return False
    return any(
        environ.get(name)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing(worker_name: str, environ: dict[str, str] | None = None) -> Any:
    """Install an OTLP-exporting tracer provider and the instrumentations when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``…_TRACES_ENDPOINT``) is set; return it, or
    ``None`` (nothing exported, nothing instrumented).

    ``OTEL_EXPORTER_OTLP_PROTOCOL`` picks ``http/protobuf`` (default) or ``grpc``;
    ``OTEL_TRACES_SAMPLER``/``_ARG`` the sampler (default: parent-based, 1 % of new
    traces); the service is ``OTEL_SERVICE_NAME`` (default ``dictamesh``), each worker an
    instance of it.
    """
    global _enabled
    env = dict(os.environ if environ is None else environ)
    if not _wanted(env):
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    resource = Resource.create(
        {
            "service.name": env.get("OTEL_SERVICE_NAME", "dictamesh"),
            "service.instance.id": worker_name,
        }
    )
    # The SDK reads OTEL_TRACES_SAMPLER itself (sampler=None); ours is the default.
    sampler = None
    if "OTEL_TRACES_SAMPLER" not in env:
        sampler = ParentBased(TraceIdRatioBased(DEFAULT_RATIO))
    provider = TracerProvider(resource=resource, sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(_exporter(env)))
    trace.set_tracer_provider(provider)
    _instrument(provider)
    _enabled = True
    log.info(
        "tracing on: OTLP over %s, sampler %s",
        _protocol(env),
        env.get("OTEL_TRACES_SAMPLER", f"parentbased_traceidratio {DEFAULT_RATIO}"),
    )
    return provider


def _protocol(env: dict[str, str]) -> str:
    return env.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    )


def _exporter(env: dict[str, str]) -> Any:
    # Both exporters read their endpoint, headers and timeouts from OTEL_* themselves.
    if _protocol(env) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()


def _instrument(provider: Any) -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiopg import AiopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    # Not the aiohttp-server instrumentation: server_middleware makes the same server spans
    # for a fraction of its cost on requests that are not sampled (see there).
    for instrumentor in (
        AioHttpClientInstrumentor(),
        RedisInstrumentor(),
        AiopgInstrumentor(),
    ):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider)


def server_middleware(web_app: Any) -> Any:
    """The HTTP server span middleware for ``web_app`` (the caller's context continued),
    or ``None`` while tracing is off."""
    if not _enabled:
        return None
    return _server_spans()


def _server_spans() -> Any:
    """An aiohttp middleware making the aiohttp-server instrumentation's server span (same
    name, kind, attributes and status, its helpers compute them), but deciding sampling
    first and computing the request's attributes only for a span that records.

    The instrumentation's own middleware computes every attribute (URL parsing, semantic
    convention filtering) and records its HTTP metrics before the sampler runs, for every
    request: measured with ``mesh bench graphql --tracing``, a cached read by id went from
    ~80 to ~160 µs of worker CPU at the default sampler. Here an unsampled request costs
    the sampler's decision and a non-recording span made current, which its children
    (operation, loader, peer calls) still follow; the span name is computed once per route,
    no propagator runs for a request without trace headers, and the span is attached to the
    context directly rather than through ``use_span`` (a generator context manager: a few µs
    per request, a tenth of a cached read's cost with the rest). The instrumentation's HTTP
    metrics are not made (no meter provider is set up: they were no-ops;
    ``dictamesh_request_duration_seconds`` is the request metric). The sampler sees the
    span's name, not its attributes (the standard samplers read neither)."""
    from aiohttp import web
    from opentelemetry.instrumentation.aiohttp_server import (
        collect_request_attributes,
        get_default_span_name,
        set_status_code,
    )
    from opentelemetry.util.http import get_excluded_urls

    excluded = get_excluded_urls("AIOHTTP_SERVER")
    server_tracer = trace.get_tracer("opentelemetry.instrumentation.aiohttp_server")
    names: dict[tuple[str, Any], str] = {}  # by method and route resource: a few dozen
    trace_headers = ("traceparent", "tracestate", "baggage")
    empty = context.Context()

    def span_name(request: Any) -> str:
        resource = request.match_info.route.resource
        if resource is None:  # not found, method not allowed: a new route object each time
            return get_default_span_name(request)
        key = (request.method, resource)
        name = names.get(key)
        if name is None:
            name = names[key] = get_default_span_name(request)
        return name

    @web.middleware
    async def server_span(request: Any, handler: Any) -> Any:
        if excluded.url_disabled(request.path):
            return await handler(request)
        headers = request.headers
        parent = (
            propagate.extract(headers) if any(name in headers for name in trace_headers) else empty
        )
        span = server_tracer.start_span(
            span_name(request), context=parent, kind=trace.SpanKind.SERVER
        )
        if not span.is_recording():
            token = context.attach(trace.set_span_in_context(span))
            try:
                return await handler(request)
            finally:
                context.detach(token)
        attributes = collect_request_attributes(request)
        span.set_attributes(attributes)
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                set_status_code(span, exc.status_code, attributes)
                if exc.status_code >= 500:
                    span.record_exception(exc)
                raise
            except Exception as exc:
                set_status_code(span, type(exc).__qualname__, attributes)  # type: ignore[arg-type]
                span.record_exception(exc)
                raise
            set_status_code(span, response.status, attributes)
            return response

    return server_span


# -- Kafka headers -----------------------------------------------------------------------


class _HeaderList:
    """A setter/getter over Kafka's ``[(name, bytes)]`` headers."""

    @staticmethod
    def set(carrier: list[tuple[str, bytes]], key: str, value: str) -> None:
        carrier.append((key, value.encode()))

    @staticmethod
    def get(carrier: Iterable[tuple[str, bytes]] | None, key: str) -> list[str] | None:
        found = [v.decode(errors="replace") for k, v in carrier or () if k == key]
        return found or None

    @staticmethod
    def keys(carrier: Iterable[tuple[str, bytes]] | None) -> list[str]:
        return [k for k, _ in carrier or ()]


def inject_headers(tenant: str | None = None) -> list[tuple[str, bytes]]:
    """``traceparent`` (and ``baggage`` with the tenant) of the current span, as Kafka
    headers; empty when no span is recording."""
    if not trace.get_current_span().get_span_context().is_valid:
        return []
    ctx = context.get_current()
    if tenant is not None:
        ctx = baggage.set_baggage(TENANT_BAGGAGE, tenant, ctx)
    headers: list[tuple[str, bytes]] = []
    propagate.inject(headers, context=ctx, setter=_HeaderList)  # type: ignore[arg-type]
    return headers


def extract_headers(headers: Iterable[tuple[str, bytes]] | None) -> SpanContext | None:
    """The span context a record's headers carry, or ``None`` (none, or not sampled)."""
    if not headers:
        return None
    ctx = propagate.extract(list(headers), getter=_HeaderList)  # type: ignore[arg-type]
    span_context = trace.get_current_span(ctx).get_span_context()
    if not span_context.is_valid or not span_context.trace_flags.sampled:
        return None
    return span_context


def sampled_context(headers: Iterable[tuple[str, bytes]] | None) -> SpanContext | None:
    """The sampled span context a record's ``traceparent`` header names, else ``None``.
    Cheap for the common cases (no header, not sampled): no propagator runs for them."""
    for name, value in headers or ():
        if name == "traceparent":
            # version-traceid-spanid-flags; bit 0 of the flags is "sampled".
            if not value.endswith((b"1", b"3", b"5", b"7", b"9", b"b", b"d", b"f")):
                return None
            return extract_headers([(name, value)])
    return None


def _link(span_context: SpanContext, message: Any) -> Link:
    return Link(
        span_context,
        {
            "messaging.destination.name": message.topic,
            "messaging.destination.partition.id": str(message.partition),
            "messaging.kafka.offset": message.offset,
        },
    )


def batch_parent(traced: Sequence[tuple[SpanContext, Any]]) -> tuple[Any, list[Link]]:
    """Where the span of a batch goes: a child of its first sampled record's context (so a
    single change's trace holds every step, and the span is kept whatever the sampler),
    linked to every other distinct sampled context (at most :data:`MAX_LINKS`)."""
    if not traced:
        return None, []
    first = traced[0][0]
    links: dict[tuple[int, int], Link] = {}
    for span_context, message in traced[1:]:
        key = (span_context.trace_id, span_context.span_id)
        if key != (first.trace_id, first.span_id) and key not in links:
            links[key] = _link(span_context, message)
            if len(links) >= MAX_LINKS:
                break
    return trace.set_span_in_context(trace.NonRecordingSpan(first)), list(links.values())


class BatchSpan:
    """The span of one batch of Kafka records (see the module docs): started only when
    tracing is on and a record of the batch is sampled, else every method is a no-op."""

    def __init__(self, span: Any = None) -> None:
        self.span = span

    @classmethod
    def start(cls, name: str, messages: Sequence[Any], group: str) -> BatchSpan:
        """Start the span of ``messages`` consumed by ``group`` (not made current)."""
        if not _enabled:
            return _NO_SPAN
        traced = [(c, m) for m in messages if (c := sampled_context(getattr(m, "headers", None)))]
        if not traced:
            return _NO_SPAN
        parent, links = batch_parent(traced)
        topics = {m.topic for m in messages}
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.consumer.group.name": group,
            "messaging.batch.message_count": len(messages),
            "dictamesh.traced_records": len(traced),
        }
        if len(topics) == 1:
            attributes["messaging.destination.name"] = next(iter(topics))
        span = tracer().start_span(
            name, context=parent, links=links, kind=trace.SpanKind.CONSUMER, attributes=attributes
        )
        return cls(span)

    def headers(self) -> list[tuple[str, bytes]]:
        """``traceparent`` of this span, for the records the batch sends on."""
        if self.span is None:
            return []
        with trace.use_span(self.span, end_on_exit=False):
            return inject_headers()

    @contextmanager
    def current(self) -> Iterator[None]:
        """Make the span current (e.g. around the Postgres writes it covers)."""
        if self.span is None:
            yield
            return
        with trace.use_span(self.span, end_on_exit=False):
            yield

    @contextmanager
    def child(self, name: str) -> Iterator[None]:
        """A child span of this one around a step of the batch."""
        if self.span is None:
            yield
            return
        with trace.use_span(self.span, end_on_exit=False), tracer().start_as_current_span(name):
            yield

    def end(self) -> None:
        """End the span (once the batch is committed)."""
        if self.span is not None:
            self.span.end()


_NO_SPAN = BatchSpan()


def current_exemplar() -> dict[str, str] | None:
    """The current trace as a Prometheus exemplar (``None`` when not traced)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid or not span_context.trace_flags.sampled:
        return None
    return {"trace_id": format(span_context.trace_id, "032x")}
