"""Internal reads GraphQL requests make of other workers.

``POST /api/v1/internal/entities``: the batched read of keys an owner holds; the same
reads as messages on a WebSocket, ``GET /api/v1/internal/entities/link``
(:mod:`mesh.catalog.links`), answered ``{"id", "results"}`` or ``{"id", "error"}``.

Body ``{"tenant", "keys": [{"kind": "entity"|"relation", "name", "id"}, …]}``; answer ``{"worker",
"results": [{"value": …} | {"error": "…"}, …]}`` in the keys' order: an entity key's value
is its stored record (``null`` when never seen), a relation key's the present member ids;
``"pending": true`` beside a value that is about to change (its invalidation is under way,
:mod:`mesh.cache.read_cache`): the caller must not cache it.
A key this worker does not actively own (the fleet rebalanced since the caller looked)
answers an error for that key; it is never forwarded again. Internal: workers call it,
clients use ``/graphql``. ``POST /api/v1/internal/scan``: this worker's part of a list page.

The tenant comes in the body, which the fleet's signature covers; a call made for a user
(signed with the user's tenant) may only name that tenant.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from mesh.auth.middleware import principal_of
from mesh.cache import ReadCache
from mesh.catalog.links import LINK_PATH, serve_links
from mesh.catalog.reader import CatalogReader
from mesh.catalog.router import WORKER_HEADER
from mesh.context import MeshContext
from mesh.errors import UnavailableError
from mesh.graphql.loader import INTERNAL_ENTITIES_PATH
from mesh.graphql.reads import Key, LocalReads
from mesh.graphql.scan import INTERNAL_SCAN_PATH, scan_local
from mesh.runtime.web import Request, Response, View, web_application
from mesh.web.entities import json_bytes_response, json_response

MAX_KEYS = 10_000


def tenant_problem(context: MeshContext, request: Request, tenant: Any) -> str | None:
    """Why ``tenant`` cannot be read for this call, or ``None`` when it can."""
    if not isinstance(tenant, str) or not context.domain.has_tenant(tenant):
        return f"'tenant' must be one of the domain's tenants, got {tenant!r}"
    principal = principal_of(request)
    if principal is not None and not principal.every_scope and principal.tenant != tenant:
        return "a call made for a user can only read the user's tenant"
    return None


def read_batch(
    reads: LocalReads, tenant: str, raw_keys: list[Any], cache: ReadCache | None = None
) -> bytes:
    """The JSON list of answers for each key of ``tenant``, in order (see the module
    docstring). An entity's record goes out as stored: it is JSON already."""
    results: list[bytes] = []
    for raw in raw_keys:
        try:
            key = Key.from_json(raw)
            location = reads.locate(key, tenant, forwarded=True)
            if location.owner is not None:
                raise UnavailableError(f"{key.name} {key.id} is not owned by this worker")
            if key.kind == "entity":
                value = location.store.get(location.partition, location.urn) or b"null"
            else:
                value = orjson.dumps(reads.read(key, location))
        except (UnavailableError, ValueError) as exc:
            results.append(orjson.dumps({"error": str(exc)}))
            continue
        if cache is not None and cache.pending(location.cache_key):
            results.append(b'{"pending":true,"value":' + value + b"}")
        else:
            results.append(b'{"value":' + value + b"}")
    return b"[" + b",".join(results) + b"]"


def register_internal_entities_view(context: MeshContext) -> None:
    """Register ``POST /api/v1/internal/entities`` and its WebSocket twin
    ``GET /api/v1/internal/entities/link`` (:mod:`mesh.catalog.links`)."""
    reader = CatalogReader(context)
    reads = LocalReads(reader)
    headers = {WORKER_HEADER: reader.worker}
    worker = orjson.dumps(reader.worker)

    def refuse(view: View, message: str) -> Response:
        body = {"error": {"code": "bad_request", "message": message}}
        return json_response(view, body, status=400, headers=headers)

    def answer(request: Any, raw: bytes) -> tuple[bytes, str | None]:
        """The results of a read body, or why it is refused."""
        try:
            body = orjson.loads(raw)
        except ValueError:
            return b"", "the body is not JSON"
        keys = body.get("keys") if isinstance(body, dict) else None
        if not isinstance(keys, list):
            return b"", 'the body must be {"tenant": ..., "keys": [...]}'
        tenant = body.get("tenant")
        problem = tenant_problem(context, request, tenant)
        if problem is not None:
            return b"", problem
        if len(keys) > MAX_KEYS:
            return b"", f"at most {MAX_KEYS} keys per request"
        return read_batch(reads, tenant, keys, context.cache), None

    @context.app.page(INTERNAL_ENTITIES_PATH)
    class InternalEntities(View):
        async def post(self, request: Request) -> Response:
            # Faust's Request type is abstract; at run time it is aiohttp's.
            results, problem = answer(request, await request.read())
            if problem is not None:
                return refuse(self, problem)
            body = b'{"worker":' + worker + b',"results":' + results + b"}"
            return json_bytes_response(self, body, headers=headers)

    serve_links(web_application(context.app), LINK_PATH, answer)


def register_internal_scan_view(context: MeshContext) -> None:
    """Register ``POST /api/v1/internal/scan`` (this worker's part of a GraphQL list page).

    Body ``{"tenant", "type", "where": {field: value}, "after": id | null, "limit"}``; answer
    ``{"worker", "partitions": [...], "records": [...]}`` (see :mod:`mesh.graphql.scan`).
    """
    reader = CatalogReader(context)
    headers = {WORKER_HEADER: reader.worker}

    @context.app.page(INTERNAL_SCAN_PATH)
    class InternalScan(View):
        async def post(self, request: Request) -> Response:
            try:
                body = json.loads(await request.read())
                entity_type, where = body["type"], body.get("where") or {}
                after, limit, tenant = body.get("after"), int(body["limit"]), body.get("tenant")
                if entity_type not in context.domain.entities or not isinstance(where, dict):
                    raise ValueError(f"unknown entity type {entity_type!r}")
                problem = tenant_problem(context, request, tenant)
                if problem is not None:
                    raise ValueError(problem)
                part = scan_local(reader, tenant, entity_type, where, after, limit)
            except (ValueError, KeyError, TypeError) as exc:
                body = {"error": {"code": "bad_request", "message": str(exc)}}
                return json_response(self, body, status=400, headers=headers)
            except UnavailableError as exc:
                body = {"error": {"code": "unavailable", "message": str(exc)}}
                return json_response(self, body, status=503, headers=headers)
            return json_response(self, {"worker": reader.worker, **part}, headers=headers)
