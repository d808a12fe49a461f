"""The entity REST API, answered by whichever worker receives the request.

``GET /api/v1/entities/{type}/{id}`` → ``{"urn", "type", "id", "tenant", "version",
"deleted", "first_seen", "last_changed", "op", "event_id", "changed_fields", "source":
{"system", "instance", "collection", "position", "timestamp"}, "schema": {"subject", "id",
"version"}, "data": {...}}``. ``id`` is the id as in the URN (a string); ``data`` is the
typed state: decimals as strings (exact), timestamps in ISO 8601. A deleted entity answers
200 with ``"deleted": true`` and its last state, so "deleted" differs from "never seen".

``GET /api/v1/entities/{type}/{id}/relations`` → ``{"urn", "type", "id", "version",
"deleted", "forward": {field: {"type", "id", "urn"} | null}, "reverse": {name: {"type",
"field", "count", "members": [{"id", "urn"}]}}}``: forward relations from the entity's
fields with ``references`` (none once deleted, as in the index), reverse ones from its
relation indexes.

Errors are ``{"error": {"code", "message", ...}}``: 404 ``unknown_type`` (with
``known_types``), 404 ``not_found``, 400 ``invalid_id``, 503 ``unavailable`` (rebalancing,
recovering or owner unreachable: retry after ``Retry-After``).

Routing: the key is the URN's bytes, as the ingestor stores it; its partition is what the
producers' default partitioner (murmur2) picks for the entity topic, computed by Faust's
consumer from the topic's metadata. The worker actively owning that partition answers from
the partition's local RocksDB database; any other forwards the request to the owner (both
decided by the fleet router, :mod:`mesh.catalog.router`) and relays the answer (not
Faust's ``route_req``: it drops the owner's headers). Answers carry ``X-Mesh-Worker`` (who read
it), ``X-Mesh-Partition`` and, when relayed, ``X-Mesh-Routed-Via``. A forwarded request is
never forwarded again: stale metadata mid-rebalance answers 503 instead of bouncing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

from mesh.auth.middleware import principal_of
from mesh.auth.principal import Principal
from mesh.catalog.reader import CatalogReader, entity_spec, parse_id
from mesh.catalog.router import PARTITION_HEADER, ROUTED_HEADER, STANDBY_HEADER, WORKER_HEADER
from mesh.context import MeshContext
from mesh.domain import DomainConfig
from mesh.errors import ApiError, UnavailableError
from mesh.runtime.web import Request, Response, View


def json_response(
    view: View, body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON answer (UTF-8; aiohttp refuses a charset inside ``content_type``)."""
    return json_bytes_response(view, json_bytes(body), status=status, headers=headers)


def json_bytes(body: Any) -> bytes:
    """``body`` as compact UTF-8 JSON."""
    try:
        return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # what orjson does not take (an int beyond 64 bits): the slow way
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def json_bytes_response(
    view: View, data: bytes, *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """An answer whose JSON body is already encoded."""
    return view.bytes(data, content_type="application/json", status=status, headers=headers)


async def forward(reader: CatalogReader, view: View, request: Request, owner: str) -> Response:
    """Relay ``request`` to the worker at ``owner`` and its answer back, headers kept."""
    # The path exactly as received (still percent-encoded), so the owner parses the
    # same id. Faust's Request type is abstract; at run time it is aiohttp's.
    raw_path = str(request.raw_path)  # type: ignore[attr-defined]
    headers = {ROUTED_HEADER: reader.worker, "Accept": "application/json"}
    # The owner checks the caller's token too: a forwarded read is still the caller's.
    authorization = request.headers.get("Authorization")
    tenant = None
    if authorization:
        headers["Authorization"] = authorization
    else:  # the fleet's own read, or MESH_AUTH=off: the owner reads the same tenant
        principal = principal_of(request)
        tenant = None if principal is None else principal.tenant
    answer = await reader.router.ask(owner, raw_path, headers=headers, tenant=tenant)
    kept = {
        name: answer.headers[name]
        for name in (WORKER_HEADER, PARTITION_HEADER, "Retry-After")
        if name in answer.headers
    }
    kept[ROUTED_HEADER] = reader.worker
    return view.bytes(answer.body, content_type=answer.content_type, status=answer.status,
                      headers=kept)  # fmt: skip


LocalAnswer = Callable[[int, str, bytes], dict[str, Any]]
"""Builds the body from the local DBs given (partition, entity id, key); may raise ApiError."""


async def answer_for_key(
    view: View,
    request: Request,
    reader: CatalogReader,
    entity_type: str,
    raw_id: str,
    local: LocalAnswer,
) -> Response:
    """Answer locally when this worker owns the entity's partition, else from its owner."""
    headers = {WORKER_HEADER: reader.worker}
    principal = principal_of(request)
    tenant = "" if principal is None else principal.tenant  # the gate names everyone here
    try:
        entity_id = parse_id(entity_spec(reader.context, entity_type), entity_type, raw_id)
        key = reader.domain.urn(tenant, entity_type, entity_id).encode()
        headers[PARTITION_HEADER] = str(reader.router.partition(entity_type, key))
        route = reader.router.route(entity_type, key, forwarded=ROUTED_HEADER in request.headers)
        if route.owner is None:
            return json_response(view, local(route.partition, entity_id, key), headers=headers)
        try:
            return await forward(reader, view, request, route.owner)
        except UnavailableError:
            if not reader.router.standby_readable(reader.table(entity_type), route.partition):
                raise
            headers[STANDBY_HEADER] = "true"
            return json_response(view, local(route.partition, entity_id, key), headers=headers)
    except UnavailableError as exc:
        retry = {"Retry-After": f"{exc.retry_after or 1:g}"}
        error = ApiError(503, "unavailable", str(exc), headers=retry)
        headers.update(error.headers)
        return json_response(view, error.body(), status=error.status, headers=headers)
    except ApiError as error:
        headers.update(error.headers)
        return json_response(view, error.body(), status=error.status, headers=headers)


_PUBLIC = ("urn", "type", "id", "tenant", "version", "deleted", "first_seen", "last_changed",
           "op", "event_id", "changed_fields", "source", "schema")  # fmt: skip


def entity_body(rec: dict[str, Any], withheld: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The public shape of a stored entity record (its ``state`` is ``data``), without the
    ``withheld`` fields."""
    state = rec["state"]
    data = {k: v for k, v in state.items() if k not in withheld} if withheld else state
    return {**{name: rec.get(name) for name in _PUBLIC}, "data": data}


def withheld_fields(
    domain: DomainConfig, entity_type: str, principal: Principal | None
) -> frozenset[str]:
    """The fields of ``entity_type`` whose scope policy ``principal`` does not meet."""
    spec = domain.entities.get(entity_type)
    if spec is None:
        return frozenset()
    return frozenset(
        name
        for name, field in spec.fields.items()
        if field.requires_scopes
        and (principal is None or not principal.has_scopes(field.requires_scopes))
    )


def relations_body(
    reader: CatalogReader, rec: dict[str, Any], partition: int, key: bytes
) -> dict[str, Any]:
    """Forward relations from the record's fields, reverse ones from its relation indexes
    (same key and partition as the entity)."""
    domain, entity_type, tenant = reader.domain, rec["type"], rec["tenant"]
    forward: dict[str, Any] = {}
    for name, spec in domain.entities[entity_type].fields.items():
        if spec.references is not None:
            value = None if rec["deleted"] else rec["state"].get(name)
            target, ref = spec.references, str(value)
            forward[name] = None if value is None else {
                "type": target, "id": ref, "urn": domain.urn(tenant, target, ref)
            }  # fmt: skip
    reverse: dict[str, Any] = {}
    for rel in (r for r in reader.relations if r.parent_type == entity_type):
        members = reader.members(rel, partition, key)
        reverse[rel.name.split(".", 1)[1]] = {
            "type": rel.child_type,
            "field": rel.field,
            "count": len(members),
            "members": [{"id": m, "urn": domain.urn(tenant, rel.child_type, m)} for m in members],
        }
    return {**{name: rec[name] for name in ("urn", "type", "id", "version", "deleted")},
            "forward": forward, "reverse": reverse}  # fmt: skip


def register_entity_views(context: MeshContext) -> None:
    """Register ``/api/v1/entities/{type}/{id}`` and ``…/{id}/relations``."""
    reader = CatalogReader(context)

    def stored(entity_type: str, partition: int, entity_id: str, key: bytes) -> Any:
        rec = reader.read(reader.table(entity_type), partition, key)
        if rec is None:
            raise ApiError(404, "not_found", f"no {entity_type} with id {entity_id}")
        return rec

    @context.app.page("/api/v1/entities/{entity_type}/{entity_id}")
    class Entity(View):
        async def get(self, request: Request, entity_type: str, entity_id: str) -> Response:
            withheld = withheld_fields(reader.domain, entity_type, principal_of(request))

            def local(partition: int, eid: str, key: bytes) -> dict[str, Any]:
                return entity_body(stored(entity_type, partition, eid, key), withheld)

            return await answer_for_key(self, request, reader, entity_type, entity_id, local)

    @context.app.page("/api/v1/entities/{entity_type}/{entity_id}/relations")
    class Relations(View):
        async def get(self, request: Request, entity_type: str, entity_id: str) -> Response:
            def local(partition: int, eid: str, key: bytes) -> dict[str, Any]:
                rec = stored(entity_type, partition, eid, key)
                return relations_body(reader, rec, partition, key)

            return await answer_for_key(self, request, reader, entity_type, entity_id, local)
