"""Saga endpoints: the public read ``GET /api/v1/sagas/{id}`` and the fleet's own.

Peer endpoints (signed by the fleet, the tenant in the body or query):
``POST /api/v1/internal/sagas`` starts a saga on its owner (``{"id", "type", "tenant",
"input"}``; answers the state), ``GET /api/v1/internal/sagas/{id}`` reads one (404 when
this worker holds none), ``GET /api/v1/internal/sagas?tenant&status&after&limit`` lists
this worker's part of a page, ``POST /api/v1/internal/stock`` makes a reservation or a
release on the owner of the product.
"""

from __future__ import annotations

import json
from typing import Any

from mesh.auth.middleware import principal_of
from mesh.catalog.router import WORKER_HEADER
from mesh.context import MeshContext
from mesh.errors import MeshError, SagaError, SagaInputError, UnavailableError
from mesh.runtime.web import Request, Response, View
from mesh.sagas.service import PEER_SAGAS_PATH, PEER_STOCK_PATH, Sagas
from mesh.web.entities import json_bytes_response, json_response
from mesh.web.internal_entities import tenant_problem

__all__ = ["register_saga_views"]


def _error(view: View, headers: dict[str, str], exc: MeshError) -> Response:
    if isinstance(exc, UnavailableError):
        body = {"error": {"code": "unavailable", "message": str(exc)}}
        retry = {**headers, "Retry-After": str(max(1, round(exc.retry_after)))}
        return json_response(view, body, status=503, headers=retry)
    if isinstance(exc, SagaInputError):
        return json_response(view, {"error": {"code": "bad_request", "message": str(exc)}},
                             status=400, headers=headers)  # fmt: skip
    status = 503 if exc.retriable else 500
    body = {"error": {"code": "saga_error", "message": str(exc)}}
    return json_response(view, body, status=status, headers=headers)


def _not_found(view: View, headers: dict[str, str], saga_id: str) -> Response:
    body = {"error": {"code": "not_found", "message": f"no saga with id {saga_id}"}}
    return json_response(view, body, status=404, headers=headers)


def register_saga_views(context: MeshContext) -> None:
    """Register the saga endpoints (when sagas are on)."""
    if context.sagas is None:
        return
    sagas: Sagas = context.sagas
    headers = {WORKER_HEADER: context.settings.worker_name}

    @context.app.page("/api/v1/sagas/{saga_id}")
    class Saga(View):
        async def get(self, request: Request, saga_id: str) -> Response:
            principal = principal_of(request)
            tenant = "" if principal is None else principal.tenant
            try:
                state = await sagas.get(tenant, saga_id)
            except MeshError as exc:
                return _error(self, headers, exc)
            if state is None:
                return _not_found(self, headers, saga_id)
            return json_response(self, state.as_json(), headers=headers)

    @context.app.page(PEER_SAGAS_PATH)
    class PeerSagas(View):
        async def post(self, request: Request) -> Response:
            try:
                body = json.loads(await request.read())
                problem = tenant_problem(context, request, body.get("tenant"))
                if problem is not None:
                    raise SagaInputError(problem)
                order = sagas.prepare(str(body["type"]), body["input"])
                state = await sagas.start_local(
                    str(body["id"]), str(body["type"]), body["tenant"], order
                )
                if sagas.store.partition(state.id) not in sagas.owned():
                    raise UnavailableError("this worker no longer owns the saga; retry")
            except (ValueError, KeyError, TypeError) as exc:
                return _error(self, headers, SagaInputError(f"bad saga start: {exc!r}"))
            except MeshError as exc:
                return _error(self, headers, exc)
            return json_bytes_response(self, state.dumps(), headers=headers)

        async def get(self, request: Request) -> Response:
            query: Any = request.query
            tenant = query.get("tenant")
            problem = tenant_problem(context, request, tenant)
            if problem is not None:
                return _error(self, headers, SagaInputError(problem))
            try:
                limit = min(int(query.get("limit", "100")), 1000)
            except ValueError:
                return _error(self, headers, SagaInputError("limit must be an integer"))
            found = sagas.list_local(tenant, query.get("status"), query.get("after"), limit)
            body = {"sagas": [s.dumps().decode() for s in found]}
            return json_response(self, body, headers=headers)

    @context.app.page(PEER_SAGAS_PATH + "/{saga_id}")
    class PeerSaga(View):
        async def get(self, request: Request, saga_id: str) -> Response:
            if sagas.store.partition(saga_id) not in sagas.owned():
                return _error(self, headers, UnavailableError("not this worker's saga; retry"))
            state = sagas.store.get(saga_id)
            if state is None:
                return _not_found(self, headers, saga_id)
            return json_bytes_response(self, state.dumps(), headers=headers)

    @context.app.page(PEER_STOCK_PATH)
    class PeerStock(View):
        async def post(self, request: Request) -> Response:
            try:
                body = json.loads(await request.read())
                problem = tenant_problem(context, request, body.get("tenant"))
                if problem is not None:
                    raise SagaInputError(problem)
                product = str(body["product"])
                urn = context.domain.urn(body["tenant"], "product", product).encode()
                if sagas.router.route("product", urn, forwarded=True).owner is not None:
                    raise UnavailableError(f"product {product} is not this worker's; retry")
                answer = await sagas.stock_local(body["tenant"], product, body)
            except (ValueError, KeyError, TypeError) as exc:
                return _error(self, headers, SagaInputError(f"bad stock request: {exc!r}"))
            except (MeshError, SagaError) as exc:
                return _error(self, headers, exc)
            return json_response(self, answer, headers=headers)
