"""Peer endpoints of the read caches' leases (:mod:`mesh.cache.peers`).

``POST /api/v1/internal/cache/lease`` ``{"worker": URL}``: the worker at ``URL`` asks for
a lease on this worker's changes; 200 ``{"lease_s"}`` when granted, 409 while its last
lease is revoked (it missed a change push and must wait for that lease to end).
``POST /api/v1/internal/cache/invalidate`` ``{"worker": URL, "keys": [...]}``: the worker
at ``URL`` is about to write changes of ``keys``; 200 ``{"dropped"}`` once this worker's
responses that read them are dropped. 400 for a body that is not so; 404 when this worker
has no lease machinery (no response cache is not that: it still grants).
"""

from __future__ import annotations

import json
from typing import Any

from mesh.cache.peers import INVALIDATE_PATH, LEASE_PATH, decode_keys
from mesh.context import MeshContext
from mesh.runtime.web import Request, Response, View
from mesh.web.entities import json_response


def _refuse(view: View, message: str, status: int = 400) -> Response:
    body = {"error": {"code": "bad_request", "message": message}}
    return json_response(view, body, status=status)


async def _body(request: Request) -> dict[str, Any]:
    # Faust's Request type is abstract; at run time it is aiohttp's.
    body = json.loads(await request.read())
    if not isinstance(body, dict) or not isinstance(body.get("worker"), str):
        raise ValueError('the body must be {"worker": URL, ...}')
    return body


def register_cache_peer_views(context: MeshContext) -> None:
    """Register the lease and invalidation endpoints."""
    app = context.app

    @app.page(LEASE_PATH)
    class Lease(View):
        async def post(self, request: Request) -> Response:
            peers = None if context.cache is None else context.cache.peers
            if peers is None:
                return _refuse(self, "this worker grants no cache leases", 404)
            try:
                body = await _body(request)
            except ValueError as exc:
                return _refuse(self, str(exc))
            if not peers.grant(body["worker"]):
                message = "the lease was revoked after a missed push; ask again once it ended"
                return _refuse(self, message, 409)
            return json_response(self, {"lease_s": peers.lease_s})

    @app.page(INVALIDATE_PATH)
    class Invalidate(View):
        async def post(self, request: Request) -> Response:
            peers = None if context.cache is None else context.cache.peers
            if peers is None:
                return _refuse(self, "this worker holds no cache leases", 404)
            try:
                body = await _body(request)
                keys = decode_keys(body.get("keys"))
            except ValueError as exc:
                return _refuse(self, str(exc))
            return json_response(self, {"dropped": peers.take(keys)})
