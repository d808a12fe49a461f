"""The web server's gate: every request but the probes, the metrics and the GraphiQL page
must carry a valid bearer token, or, on the peer endpoints, the fleet's signature
(:mod:`mesh.auth.peer`); the principal it names is attached to the request for the views
(:func:`principal_of`).

A refused request gets 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` and a
short reason (missing or invalid), never which check failed; that goes to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from mesh.auth.peer import PEER_PREFIX, SIGNATURE_HEADER, PeerAuthError, PeerSigner, caller
from mesh.auth.principal import Principal
from mesh.auth.verifier import AuthError, TokenVerifier

logger = logging.getLogger(__name__)

PRINCIPAL = "dictamesh.principal"
"""The request key the principal is stored under."""

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Open to probes and scrapers: they expose no entity data."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def principal_of(request: Any) -> Principal | None:
    """The principal the gate attached to ``request`` (``None`` on open paths)."""
    found: Principal | None = request.get(PRINCIPAL)
    return found


def _open(request: web.Request) -> bool:
    if request.path in PUBLIC_PATHS:
        return True
    # The GraphiQL page itself holds no data; the queries it sends carry the token.
    return (
        request.path == "/graphql"
        and request.method == "GET"
        and "text/html" in request.headers.get("Accept", "")
        and "query" not in request.query
    )


async def _check_peer(request: web.Request, signer: PeerSigner, tenant: str) -> Principal:
    body = await request.read()  # kept by aiohttp: the view reads it again
    signer.check(request.method, request.raw_path, body, request.headers)
    return caller(request.headers, tenant)


def _refusal(request: web.Request, reason: str) -> web.Response:
    challenge = f'Bearer realm="dictamesh", error="invalid_token", error_description="{reason}"'
    if request.path == "/graphql":
        body: dict[str, Any] = {
            "errors": [{"message": reason, "extensions": {"code": "UNAUTHENTICATED"}}]
        }
    else:
        body = {"error": {"code": "unauthorized", "message": reason}}
    return web.Response(
        body=orjson.dumps(body),
        status=401,
        content_type="application/json",
        headers={"WWW-Authenticate": challenge},
    )


def gate(
    verifier: TokenVerifier | None,
    everyone: Principal | None = None,
    *,
    signer: PeerSigner | None = None,
    tenant: str = "",
) -> Any:
    """The middleware: ``verifier`` checks tokens; with ``everyone`` instead
    (``MESH_AUTH=off``) every request is that principal; with neither, every request is
    refused. Peer endpoints need ``signer``'s signature (open without one, which only
    ``MESH_AUTH=off`` allows); ``tenant`` is the fleet's own."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _open(request):
            return await handler(request)
        if request.path.startswith(PEER_PREFIX):
            if signer is None:
                return await handler(request)
            try:
                request[PRINCIPAL] = await _check_peer(request, signer, tenant)
            except PeerAuthError as exc:
                logger.warning("403 for %s %s: %s", request.method, request.path, exc)
                body = {"error": {"code": "forbidden", "message": "peer endpoints are the fleet's"}}
                return web.Response(
                    body=orjson.dumps(body), status=403, content_type="application/json"
                )
            return await handler(request)
        if everyone is not None:
            request[PRINCIPAL] = everyone
            return await handler(request)
        signed = SIGNATURE_HEADER in request.headers and "Authorization" not in request.headers
        if signer is not None and signed:  # a worker's own read of a public path
            try:
                request[PRINCIPAL] = await _check_peer(request, signer, tenant)
            except PeerAuthError as exc:
                logger.warning("401 for %s %s: %s", request.method, request.path, exc)
                return _refusal(request, "invalid bearer token")
            return await handler(request)
        try:
            if verifier is None:
                raise AuthError("authentication is not configured on this worker")
            principal = await verifier.verify(request.headers.get("Authorization"))
        except AuthError as exc:
            logger.info("401 for %s %s: %s", request.method, request.path, exc)
            return _refusal(request, exc.public)
        request[PRINCIPAL] = principal
        return await handler(request)

    return authenticate
