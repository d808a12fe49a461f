"""``/graphql``: GraphQL over HTTP, answered by any worker.

``POST /graphql`` with a JSON body ``{"query", "variables", "operationName"}`` answers
``application/json`` ``{"data", "errors"}``: 200 whenever the request could be read, GraphQL
errors included (syntax, validation and field errors alike); 400 when the body is not JSON,
not an object, has no string ``query`` or bad ``variables``/``operationName``.
``GET /graphql`` serves GraphiQL to a browser (``Accept: text/html`` without ``query``; the
page and the files it loads come from the worker, :mod:`mesh.web.graphiql`); otherwise
``?query=…&variables=<JSON>&operationName=…`` executes a query (a mutation over GET
answers 405: GET must stay safe).

The schema is built once, when the views are registered. Each request gets its own
:class:`~mesh.graphql.Loader` as the execution context, which batches and caches its reads
per owning worker. With the header ``X-Mesh-Debug: batches`` the answer's ``extensions``
lists the batches the request made. Answers without errors are kept in the worker's read
caches (:mod:`mesh.cache`) and served from them until what they read changes; a request
with ``Cache-Control: no-cache`` is answered from the tables and leaves the caches alone.
"""

from __future__ import annotations

import json
from typing import Any, cast

import orjson
from graphql import ExecutionResult, OperationType, get_operation_ast

from mesh.auth.audit import OPERATION
from mesh.auth.middleware import principal_of
from mesh.auth.principal import Principal
from mesh.cache import Recorder
from mesh.catalog.reader import CatalogReader
from mesh.catalog.router import WORKER_HEADER
from mesh.context import MeshContext
from mesh.errors import MeshError
from mesh.graphql import GraphQLMetrics, Loader, LocalReads, build_schema
from mesh.graphql.limits import (
    BodyTooLargeError,
    GraphQLLimits,
    QueryCache,
    check_body_size,
    error_outcome,
    format_errors,
    run_with_timeout,
)
from mesh.graphql.plan import execute
from mesh.observability.requests import note_graphql
from mesh.observability.tracing import tracer
from mesh.runtime.web import Request, Response, View
from mesh.settings import Settings
from mesh.web.entities import (
    json_bytes,
    json_bytes_response,
    json_response,
)
from mesh.web.graphiql import page_response, register_graphiql_assets

GRAPHQL_PATH = "/graphql"
DEBUG_HEADER = "X-Mesh-Debug"


class BadRequestError(MeshError):
    """The HTTP request is not a GraphQL request (answered 400)."""


class NotAllowedError(MeshError):
    """A mutation over GET (answered 405)."""

    def __init__(self) -> None:
        super().__init__("only queries can be sent with GET; use POST")


def _params(data: Any) -> tuple[str, dict[str, Any] | None, str | None]:
    """``(query, variables, operationName)`` of a decoded request; :class:`BadRequestError`."""
    if not isinstance(data, dict):
        raise BadRequestError("the body must be a JSON object {query, variables, operationName}")
    query, variables, name = data.get("query"), data.get("variables"), data.get("operationName")
    if not isinstance(query, str) or not query.strip():
        raise BadRequestError("the request has no 'query' string")
    if isinstance(variables, str):  # GET sends them as a JSON string
        try:
            variables = _loads(variables) if variables else None
        except ValueError:
            raise BadRequestError("'variables' is not valid JSON") from None
    if variables is not None and not isinstance(variables, dict):
        raise BadRequestError("'variables' must be an object")
    if name is not None and not isinstance(name, str):
        raise BadRequestError("'operationName' must be a string")
    return query, variables, name or None


async def _read_at_most(stream: Any, most: int) -> bytes:
    """The body, or its first ``most`` bytes: one ``read(n)`` returns what has arrived so
    far, which for a chunked body may be a single chunk."""
    parts: list[bytes] = []
    size = 0
    while size < most:
        part = await stream.read(most - size)
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def graphql_limits(settings: Settings) -> GraphQLLimits:
    """The query limits the settings ask for."""
    return GraphQLLimits(
        max_depth=settings.graphql_max_depth,
        max_aliases=settings.graphql_max_aliases,
        max_fields=settings.graphql_max_fields,
        max_tokens=settings.graphql_max_tokens,
        max_body_bytes=settings.graphql_max_body_kb * 1024,
        timeout_s=settings.graphql_timeout_s,
        introspection=settings.graphql_introspection,
        error_detail=settings.graphql_error_detail,
    )


def _loads(raw: bytes | str) -> Any:
    """JSON decoded, quickly when orjson takes it (what it refuses, e.g. ``NaN`` or an
    integer beyond 64 bits, the standard library decides); ``ValueError`` when invalid."""
    try:
        return orjson.loads(raw)
    except ValueError:
        return json.loads(raw)


def _variables_key(variables: dict[str, Any] | None) -> bytes:
    """The variables as the response cache keys them (the same values: the same key)."""
    try:
        return orjson.dumps(variables, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:  # an int beyond 64 bits
        return json.dumps(variables, sort_keys=True).encode()


def _audience(principal: Principal | None) -> str:
    """Who may share a cached answer: the same tenant with the same scopes."""
    if principal is None:
        return ""
    scopes = "*" if principal.every_scope else " ".join(sorted(principal.scopes))
    return f"{principal.tenant}|{scopes}"


def register_graphql_views(context: MeshContext) -> None:
    """Build the schema of ``context.domain`` and register ``GET``/``POST /graphql``."""
    schema = build_schema(context.domain, context.sagas).graphql_schema
    limits = graphql_limits(context.settings)
    queries = QueryCache(schema, limits)
    reader = CatalogReader(context)
    reads = LocalReads(reader)
    metrics = GraphQLMetrics(context.metrics)
    cache = context.cache
    app = context.app
    graphiql = register_graphiql_assets(context)

    async def run(view: View, request: Request, params: Any, *, only_queries: bool) -> Response:
        headers = {WORKER_HEADER: reader.worker}
        recorder: Recorder | None = None
        try:
            query, variables, operation_name = _params(params)
            cast(Any, request)[OPERATION] = operation_name or "anonymous"  # for the audit line
            debug = request.headers.get(DEBUG_HEADER, "").lower() == "batches"
            fresh = "no-cache" in request.headers.get("Cache-Control", "").lower()
            use = None if fresh else cache
            principal = principal_of(request)
            # The gate names everyone who gets here; without a principal nothing is found.
            tenant = "" if principal is None else principal.tenant
            request_key = None
            if use is not None and not debug:
                # An answer is only ever reused for the same tenant and scopes (fields with
                # a scope policy differ between callers).
                request_key = (
                    _audience(principal), query, _variables_key(variables),
                    operation_name,
                )  # fmt: skip
                cached = use.response(request_key)
                if cached is not None:
                    note_graphql(request, "query")  # only successful queries are cached
                    metrics.ok.inc()
                    return json_bytes_response(view, cached, headers=headers)
                recorder = use.record()
            prepared = queries.prepare(query)
            operation_type = "invalid"
            loader: Loader | None = None
            if prepared.errors or prepared.document is None:
                result = ExecutionResult(data=None, errors=list(prepared.errors))
            else:
                document = prepared.document
                operation = get_operation_ast(document, operation_name)
                named = operation_name
                if operation is not None:
                    operation_type = operation.operation.value
                    if operation.name is not None:
                        named = operation.name.value
                if only_queries and operation and operation.operation != OperationType.QUERY:
                    raise NotAllowedError
                loader = Loader(reads, reader.router, metrics, reader.worker, tenant,
                                cache=use, recorder=recorder, principal=principal)  # fmt: skip
                span_name = f"{operation_type} {named or ''}".rstrip()
                with tracer().start_as_current_span(span_name) as span:
                    if span.is_recording():
                        span.set_attribute("graphql.operation.type", operation_type)
                        span.set_attribute("graphql.operation.name", named or "")
                    executed = execute(
                        schema, document, variable_values=variables,
                        operation_name=operation_name, context_value=loader,
                    )  # fmt: skip
                    result = await run_with_timeout(executed, limits)
                if debug:
                    result.extensions = {"batches": [b.as_json() for b in loader.batches]}
            note_graphql(
                request, operation_type, error_outcome(result.errors) if result.errors else None
            )
            (metrics.failed if result.errors else metrics.ok).inc()
            answer: dict[str, Any] = {"data": result.data}
            if result.errors:
                answer["errors"] = format_errors(result.errors, limits)
            if result.extensions:
                answer["extensions"] = result.extensions
            body = json_bytes(answer)
            cacheable = loader is None or loader.cacheable
            if use is not None and recorder is not None and not result.errors and cacheable:
                use.store(request_key, body, recorder)
            return json_bytes_response(view, body, headers=headers)
        except BadRequestError as exc:
            bad = {"errors": [{"message": str(exc)}]}
            return json_response(view, bad, status=400, headers=headers)
        except NotAllowedError as exc:
            bad = {"errors": [{"message": str(exc)}]}
            return json_response(view, bad, status=405, headers={**headers, "Allow": "POST"})
        finally:
            if cache is not None and recorder is not None:
                cache.forget(recorder)

    @app.page(GRAPHQL_PATH)
    class GraphQL(View):
        async def get(self, request: Request) -> Response:
            # Faust's Request type is abstract; at run time it is aiohttp's.
            query_params = dict(request.query)
            accept = request.headers.get("Accept", "")
            if "text/html" in accept and "query" not in query_params:
                return page_response(self, graphiql)
            return await run(self, request, query_params, only_queries=True)

        async def post(self, request: Request) -> Response:
            headers = {WORKER_HEADER: reader.worker}
            # Faust's Request type is abstract; at run time it is aiohttp's.
            raw = request  # type: Any
            try:
                check_body_size(raw.content_length, limits)
                if raw.content_length is not None:  # within the limit, as just checked
                    body = await raw.read()
                else:  # chunked bodies carry no length
                    body = await _read_at_most(raw.content, limits.max_body_bytes + 1)
                    check_body_size(len(body), limits)
            except BodyTooLargeError as exc:
                error = {"errors": [{"message": str(exc)}]}
                return json_response(self, error, status=413, headers=headers)
            try:
                params = _loads(body)
            except ValueError:
                error = {"errors": [{"message": "the body is not valid JSON"}]}
                return json_response(self, error, status=400, headers=headers)
            return await run(self, request, params, only_queries=False)
