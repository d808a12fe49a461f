"""The tracing benches' parts: the events' trace headers, the workers' ``OTEL_*`` per mode,
the counting OTLP sink, and ``mesh bench ingest --tracing`` with tiny numbers."""

from __future__ import annotations

import re

import aiohttp
import pytest
from aiohttp import web
from mesh_tooling.bench.ingest import (
    POLL_RECORDS,
    TRACING_MODES,
    IngestBench,
    poll_headers,
    sampled_share,
    trace_env,
    tracing_report,
)
from mesh_tooling.dev.otlp_sink import SinkStats, make_app
from mesh_tooling.dev.process import free_port
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from mesh.observability.tracing import DEFAULT_RATIO, TENANT_BAGGAGE, sampled_context
from mesh.settings import Settings

TRACEPARENT = re.compile(rb"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$")


def test_events_carry_what_an_adapter_sends_in_each_mode() -> None:
    assert poll_headers("off", 3, "default") == [[], [], []]
    for mode in ("default", "100%"):
        polls = poll_headers(mode, 400, "default")
        for headers in polls:
            names = [name for name, _ in headers]
            assert names == ["traceparent", "baggage"], headers
            assert TRACEPARENT.match(headers[0][1]), headers
            assert headers[1][1] == f"{TENANT_BAGGAGE}=default".encode()
        assert len({h[0][1] for h in polls}) == len(polls)  # a trace per poll
        assert polls == poll_headers(mode, 400, "default")  # the same in every round
    assert sampled_share(poll_headers("100%", 400, "default")) == 1.0
    default = poll_headers("default", 3000, "default")
    # The source's 1 % of new traces (DEFAULT_RATIO): ~30 of 3000 polls.
    assert 0.4 * DEFAULT_RATIO < sampled_share(default) < 2 * DEFAULT_RATIO
    # The catalog follows the flag: a sampled poll's records give a parent context.
    sampled = [h for h in default if h[0][1].endswith(b"-01")]
    assert sampled
    assert sampled_context(sampled[0]) is not None
    assert all(sampled_context(h) is None for h in default if h not in sampled)


def test_worker_settings_per_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    endpoint = "http://127.0.0.1:4318"
    off = trace_env("off", endpoint)
    assert off["OTEL_EXPORTER_OTLP_ENDPOINT"] == off["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == ""
    default = trace_env("default", endpoint)
    assert default["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint
    assert default["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == f"{endpoint}/v1/traces"
    assert "OTEL_TRACES_SAMPLER" not in default  # the product's default sampler
    assert trace_env("100%", endpoint)["OTEL_TRACES_SAMPLER"] == "always_on"
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")  # inherited: overridden
    default = trace_env("default", endpoint)
    assert default["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert default["OTEL_TRACES_SAMPLER_ARG"] == str(DEFAULT_RATIO)


async def test_the_sink_counts_spans_and_answers_like_a_collector() -> None:
    stats = SinkStats()
    runner = web.AppRunner(make_app(stats))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for n in range(3):
        span = scope.spans.add()
        span.name = f"span {n}"
        span.trace_id = bytes(16)
        span.span_id = bytes([n + 1]) * 8
    body = request.SerializeToString()
    headers = {"Content-Type": "application/x-protobuf"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/v1/traces", data=body,
                                 headers=headers) as resp:  # fmt: skip
                assert resp.status == 200
                assert resp.content_type == "application/x-protobuf"
                ExportTraceServiceResponse().ParseFromString(await resp.read())
            async with http.post(f"http://127.0.0.1:{port}/v1/traces", data=b"\xff\xff") as resp:
                assert resp.status == 400
            async with http.get(f"http://127.0.0.1:{port}/stats") as resp:
                counted = await resp.json()
    finally:
        await runner.cleanup()
    assert counted == {"requests": 2, "bytes": len(body) + 2, "spans": 3, "errors": 1}


async def test_the_ingest_tracing_bench_measures_each_mode() -> None:
    bench = IngestBench(Settings(), events=2 * POLL_RECORDS)
    runs = await bench.run_tracing(rounds=1)
    assert [t.mode for t in runs] == list(TRACING_MODES)
    for run in runs:
        assert run.per_s > 0
        assert run.batch_mean > 0
    off, _, full = runs
    assert (off.sampled_polls, full.sampled_polls) == (0.0, 1.0)
    assert off.spans == off.exports == 0  # tracing off exports nothing
    assert full.spans > 0  # every batch is traced at 100 %
    lines = tracing_report(runs)
    assert lines[0].startswith("round 1 off    :")
    assert lines[-3].startswith("catalog, tracing off    : mean")
    assert "/ off of the same round: mean" in lines[-2]
    assert "target ≥ 0.85:" in lines[-2]
    assert lines[-1].startswith("catalog, tracing 100%   : mean")
    assert not bench.root.exists()  # the scratch directory is gone
