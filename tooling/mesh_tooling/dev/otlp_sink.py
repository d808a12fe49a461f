"""A cheap OTLP/HTTP trace sink for the benchmarks: ``POST /v1/traces`` accepted and
counted, nothing kept.

Each request is answered with an empty ``ExportTraceServiceResponse`` (what a collector
answers on success). It counts requests, bytes and spans: the body is parsed only to count
the spans of each ``ResourceSpans``/``ScopeSpans`` (upb protobuf, microseconds per export),
so a bench can check how much the workers exported at each sampler. ``GET /stats`` answers
the counts as JSON. Run it in a process of its own (``python -m
mesh_tooling.dev.otlp_sink --port N``) so its CPU time is the sink's, not the bench's; the
workers point ``OTEL_EXPORTER_OTLP_ENDPOINT`` at ``http://127.0.0.1:N``.

The tests' receiver (``tests/support/otlp.py``) decodes every span to check the traces'
shape; this one only counts, to stay cheap on the cores the workers are measured on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from dataclasses import asdict, dataclass

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = ["SinkStats", "main", "make_app"]

_OK = ExportTraceServiceResponse().SerializeToString()


@dataclass
class SinkStats:
    """What the sink received so far."""

    requests: int = 0
    bytes: int = 0
    spans: int = 0
    errors: int = 0
    """Bodies that did not parse as an ``ExportTraceServiceRequest``."""


def _span_count(body: bytes) -> int:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)


def make_app(stats: SinkStats | None = None) -> web.Application:
    """The sink's aiohttp application, counting into ``stats``."""
    counts = stats if stats is not None else SinkStats()

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp undoes a gzip Content-Encoding
        counts.requests += 1
        counts.bytes += len(body)
        try:
            counts.spans += _span_count(body)
        except Exception:  # a malformed body: counted, answered 400 like a collector
            counts.errors += 1
            return web.Response(status=400, text="not an ExportTraceServiceRequest")
        return web.Response(body=_OK, content_type="application/x-protobuf")

    async def show(request: web.Request) -> web.Response:
        return web.json_response(asdict(counts))

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/stats", show)
    return app


async def _serve(host: str, port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(json.dumps({"listening": f"http://{host}:{port}"}), flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """``python -m mesh_tooling.dev.otlp_sink [--host H] --port N``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
