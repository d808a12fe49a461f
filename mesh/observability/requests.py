"""Every public request timed by API, operation class and outcome, and (when tracing)
served inside an HTTP server span: two aiohttp middlewares in front of all others.

The operation class of a GraphQL request is only known once its document is parsed: the
GraphQL view records it (and an outcome when a 200 answer carries errors) on the request
with :func:`note_graphql`; REST operations follow from the route.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from mesh.observability.slo import SloMetrics
from mesh.observability.tracing import server_middleware, tracing_enabled

__all__ = ["note_graphql", "observe_requests"]

_OPERATION = "dictamesh.operation_type"
_OUTCOME = "dictamesh.outcome"
_REST = (
    (re.compile(r"^/api/v1/entities/[^/]+/[^/]+/relations$"), "relations"),
    (re.compile(r"^/api/v1/entities/[^/]+/[^/]+$"), "entity"),
    (re.compile(r"^/api/v1/catalog/types$"), "types"),
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def note_graphql(request: Any, operation_type: str, outcome: str | None = None) -> None:
    """Record a GraphQL request's operation class (``query``, ``mutation``,
    ``subscription``, ``invalid``) and, for a 200 answer with errors, its outcome."""
    request[_OPERATION] = operation_type
    if outcome is not None:
        request[_OUTCOME] = outcome


def _classify(request: web.Request) -> tuple[str, str] | None:
    path = request.path
    if path == "/graphql":
        if request.method == "GET" and "query" not in request.query:
            return None  # the GraphiQL page
        return "graphql", ""
    for pattern, operation in _REST:
        if pattern.match(path):
            return "rest", operation
    return None


def _outcome(status: int) -> str:
    if status >= 500:
        return "server_error"
    return "client_error" if status >= 400 else "ok"


def _timing(slo: SloMetrics) -> Any:
    @web.middleware
    async def timing(request: web.Request, handler: Handler) -> web.StreamResponse:
        kind = _classify(request)
        if kind is None:
            return await handler(request)
        api, operation = kind
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            outcome = request.get(_OUTCOME) if status == 200 else None
            if api == "graphql":
                operation = request.get(_OPERATION, "invalid")
            slo.request(api, operation, outcome or _outcome(status), time.perf_counter() - started)

    return timing


def observe_requests(slo: SloMetrics, web_app: Any) -> None:
    """Put the timing middleware in front of ``web_app``'s middlewares (the gate's), right
    inside the tracing one when tracing is on: its exemplar is the request's trace.

    Before the web server starts (aiohttp freezes the list then)."""
    middlewares = web_app.middlewares
    timing = _timing(slo)
    if not tracing_enabled():
        middlewares.insert(0, timing)
        return
    traced = server_middleware(web_app)
    if traced is None:  # made after instrumenting: the span middleware is the first
        middlewares.insert(1, timing)
    else:
        middlewares[0:0] = [traced, timing]
