"""``/graphql``: GraphQL over HTTP, answered by any worker.

``POST /graphql`` with a JSON body ``{"query", "variables", "operationName"}`` answers
``application/json`` ``{"data", "errors"}``: 200 whenever the request could be read, GraphQL
errors included (syntax, validation and field errors alike); 400 when the body is not JSON,
not an object, has no string ``query`` or bad ``variables``/``operationName``.
``GET /graphql`` serves GraphiQL to a browser (``Accept: text/html`` without ``query``);
otherwise ``?query=…&variables=<JSON>&operationName=…`` executes a query (a mutation over
GET answers 405: GET must stay safe).

The schema is built once, when the views are registered. Each request gets its own
:class:`~mesh.graphql.Loader` as the execution context, which batches and caches its reads
per owning worker. With the header ``X-Mesh-Debug: batches`` the answer's ``extensions``
lists the batches the request made.
"""

from __future__ import annotations

import json
from inspect import isawaitable
from typing import Any

from faust.web import Request, Response, View
from graphql import (
    ExecutionResult,
    GraphQLError,
    OperationType,
    execute,
    get_operation_ast,
    parse,
    validate,
)

from mesh.context import MeshContext
from mesh.graphql import GraphQLMetrics, Loader, LocalReads, build_schema
from mesh.graphql.graphiql import GRAPHIQL_HTML
from mesh.web.entities import WORKER_HEADER, CatalogReader, json_response

GRAPHQL_PATH = "/graphql"
DEBUG_HEADER = "X-Mesh-Debug"


class BadRequestError(Exception):
    """The HTTP request is not a GraphQL request (answered 400)."""


class NotAllowedError(Exception):
    """A mutation over GET (answered 405)."""


def _params(data: Any) -> tuple[str, dict[str, Any] | None, str | None]:
    """``(query, variables, operationName)`` of a decoded request; :class:`BadRequestError`."""
    if not isinstance(data, dict):
        raise BadRequestError("the body must be a JSON object {query, variables, operationName}")
    query, variables, name = data.get("query"), data.get("variables"), data.get("operationName")
    if not isinstance(query, str) or not query.strip():
        raise BadRequestError("the request has no 'query' string")
    if isinstance(variables, str):  # GET sends them as a JSON string
        try:
            variables = json.loads(variables) if variables else None
        except ValueError:
            raise BadRequestError("'variables' is not valid JSON") from None
    if variables is not None and not isinstance(variables, dict):
        raise BadRequestError("'variables' must be an object")
    if name is not None and not isinstance(name, str):
        raise BadRequestError("'operationName' must be a string")
    return query, variables, name or None


def register_graphql_views(context: MeshContext) -> None:
    """Build the schema of ``context.domain`` and register ``GET``/``POST /graphql``."""
    schema = build_schema(context.domain).graphql_schema
    reader = CatalogReader(context)
    reads = LocalReads(reader)
    metrics = GraphQLMetrics(context.metrics)
    app = context.app

    async def run(view: View, request: Request, params: Any, *, only_queries: bool) -> Response:
        headers = {WORKER_HEADER: reader.worker}
        try:
            query, variables, operation_name = _params(params)
            document = parse(query)
            errors = validate(schema, document)
            if errors:
                result = ExecutionResult(data=None, errors=errors)
            else:
                operation = get_operation_ast(document, operation_name)
                if only_queries and operation and operation.operation != OperationType.QUERY:
                    raise NotAllowedError
                loader = Loader(reads, app.http_client, metrics, reader.worker)
                executed = execute(
                    schema, document, variable_values=variables,
                    operation_name=operation_name, context_value=loader,
                )  # fmt: skip
                result = await executed if isawaitable(executed) else executed
                if request.headers.get(DEBUG_HEADER, "").lower() == "batches":
                    result.extensions = {"batches": [b.as_json() for b in loader.batches]}
        except BadRequestError as exc:
            body = {"errors": [{"message": str(exc)}]}
            return json_response(view, body, status=400, headers=headers)
        except NotAllowedError:
            body = {"errors": [{"message": "only queries can be sent with GET; use POST"}]}
            return json_response(view, body, status=405, headers={**headers, "Allow": "POST"})
        except GraphQLError as exc:  # a syntax error: the request was read, the query is bad
            result = ExecutionResult(data=None, errors=[exc])
        metrics.requests.labels(outcome="errors" if result.errors else "ok").inc()
        return json_response(view, result.formatted, headers=headers)

    @app.page(GRAPHQL_PATH)
    class GraphQL(View):  # type: ignore[misc]
        async def get(self, request: Request) -> Response:
            # Faust's Request type is abstract; at run time it is aiohttp's.
            query_params = dict(request.query)  # type: ignore[attr-defined]
            accept = request.headers.get("Accept", "")
            if "text/html" in accept and "query" not in query_params:
                return self.bytes(GRAPHIQL_HTML.encode(), content_type="text/html")
            return await run(self, request, query_params, only_queries=True)

        async def post(self, request: Request) -> Response:
            try:
                params = json.loads(await request.read())  # type: ignore[attr-defined]
            except ValueError:
                params = None
                body = {"errors": [{"message": "the body is not valid JSON"}]}
                headers = {WORKER_HEADER: reader.worker}
                return json_response(self, body, status=400, headers=headers)
            return await run(self, request, params, only_queries=False)
