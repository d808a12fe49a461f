"""The web server's gate: every request but the probes, the metrics and the GraphiQL page
(with the files it loads) must carry a valid bearer token, or, on the peer endpoints, the
fleet's signature (:mod:`mesh.auth.peer`); the principal it names is attached to the
request for the views (:func:`principal_of`). Authenticated subjects are rate-limited and
every request they make is audited (:mod:`mesh.auth.audit`).

A refused request gets 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` and a
short reason (missing or invalid), never which check failed; that goes to the log.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson
from aiohttp import web

from mesh.auth.audit import OPERATION, audit
from mesh.auth.peer import (
    PEER_PREFIX,
    SIGNATURE_HEADER,
    TENANT_HEADER,
    PeerAuthError,
    PeerSigner,
    caller,
)
from mesh.auth.principal import Principal
from mesh.auth.ratelimit import RateLimiter
from mesh.auth.verifier import AuthError, TokenVerifier

logger = logging.getLogger(__name__)

PRINCIPAL = "dictamesh.principal"
"""The request key the principal is stored under."""

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Open to probes and scrapers: they expose no entity data."""

GRAPHIQL_ASSETS = "/graphiql/"
"""Where the GraphiQL page's scripts and stylesheets are served (open: static files)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def principal_of(request: Any) -> Principal | None:
    """The principal the gate attached to ``request`` (``None`` on open paths)."""
    found: Principal | None = request.get(PRINCIPAL)
    return found


def _open(request: web.Request) -> bool:
    if request.path in PUBLIC_PATHS:
        return True
    if request.method != "GET":
        return False
    # The GraphiQL page and its files hold no data; the queries it sends carry the token.
    if request.path.startswith(GRAPHIQL_ASSETS):
        return True
    return (
        request.path == "/graphql"
        and "text/html" in request.headers.get("Accept", "")
        and "query" not in request.query
    )


def _public(path: str) -> bool:
    """Probes and metrics answer on every port (a probe may use either)."""
    return path in PUBLIC_PATHS


def _arrived_on(request: web.Request) -> int | None:
    """The port of this worker the request arrived on."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return int(sockname[1]) if sockname else None


def _error(
    request: web.Request, status: int, code: str, message: str, **headers: str
) -> web.Response:
    if request.path == "/graphql":
        body: dict[str, Any] = {"errors": [{"message": message, "extensions": {"code": code}}]}
    else:
        body = {"error": {"code": code.lower(), "message": message}}
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _refusal(request: web.Request, reason: str) -> web.Response:
    challenge = f'Bearer realm="dictamesh", error="invalid_token", error_description="{reason}"'
    code = "UNAUTHENTICATED" if request.path == "/graphql" else "unauthorized"
    return _error(request, 401, code, reason, **{"WWW-Authenticate": challenge})


@dataclass
class GateCounters:
    """What the gate counts (the worker's metrics increment them)."""

    refused: Callable[[str], None] = lambda reason: None
    """A request refused: ``missing``, ``invalid``, ``peer`` or ``rate_limited``."""


@dataclass
class Gate:
    """The middleware (:meth:`middleware`).

    ``verifier`` checks tokens; with ``everyone`` instead (``MESH_AUTH=off``) every request
    is that principal; with neither, every request is refused. Peer endpoints need
    ``signer``'s signature (open without one, which only ``MESH_AUTH=off`` allows), which
    also stands in for a token when a worker reads another's public path; ``tenants`` are
    the domain's, the first being whom the fleet acts for when a call names none.
    """

    verifier: TokenVerifier | None
    everyone: Principal | None = None
    signer: PeerSigner | None = None
    tenants: tuple[str, ...] = ("",)
    limiter: RateLimiter | None = None
    counters: GateCounters | None = None
    peer_port: int | None = None
    """Where the peer endpoints are served, and only they (``None``: with the rest)."""
    audit: bool = True
    """Log an audit line per request (:mod:`mesh.auth.audit`)."""

    def middleware(self) -> Any:
        """The aiohttp middleware."""

        @web.middleware
        async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
            if self.peer_port is not None and not _public(request.path):
                on_peer_port = _arrived_on(request) == self.peer_port
                if request.path.startswith(PEER_PREFIX) != on_peer_port:
                    return _error(request, 404, "NOT_FOUND", "not served on this port")
            if _open(request):
                return await handler(request)
            if request.path.startswith(PEER_PREFIX):
                return await self._peer(request, handler)
            if not self.audit:
                return await self._user(request, handler)
            started = time.perf_counter()
            response = await self._user(request, handler)
            principal = principal_of(request)
            if principal is None or not principal.every_scope:
                audit(principal, request.method, request.path, request.get(OPERATION),
                      response.status, time.perf_counter() - started)  # fmt: skip
            return response

        return gate

    def _count(self, reason: str) -> None:
        if self.counters is not None:
            self.counters.refused(reason)

    async def _peer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.signer is None:
            return await handler(request)
        try:
            request[PRINCIPAL] = await self._check_peer(request, self.signer)
        except PeerAuthError as exc:
            logger.warning("403 for %s %s: %s", request.method, request.path, exc)
            self._count("peer")
            return _error(request, 403, "FORBIDDEN", "peer endpoints are the fleet's")
        return await handler(request)

    async def _check_peer(self, request: web.Request, signer: PeerSigner) -> Principal:
        body = await request.read()  # kept by aiohttp: the view reads it again
        signer.check(request.method, request.raw_path, body, request.headers)
        return caller(request.headers, self.tenants[0])

    async def _user(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.everyone is not None:
            # MESH_AUTH=off: X-Mesh-Tenant picks a tenant (there is no token to say).
            tenant = request.headers.get(TENANT_HEADER)
            if tenant is not None and tenant in self.tenants:
                request[PRINCIPAL] = replace(self.everyone, tenant=tenant)
            else:
                request[PRINCIPAL] = self.everyone
            return await handler(request)
        signed = SIGNATURE_HEADER in request.headers and "Authorization" not in request.headers
        try:
            if self.signer is not None and signed:  # a worker's own read of a public path
                try:
                    principal = await self._check_peer(request, self.signer)
                except PeerAuthError as exc:
                    raise AuthError(str(exc)) from None
            elif self.verifier is None:
                raise AuthError("authentication is not configured on this worker")
            else:
                principal = await self.verifier.verify(request.headers.get("Authorization"))
        except AuthError as exc:
            logger.info("401 for %s %s: %s", request.method, request.path, exc)
            self._count("missing" if exc.public.startswith("missing") else "invalid")
            return _refusal(request, exc.public)
        request[PRINCIPAL] = principal
        if self.limiter is not None and not principal.every_scope:
            wait = self.limiter.take(f"{principal.tenant}/{principal.subject}")
            if wait is not None:
                self._count("rate_limited")
                retry = str(max(1, math.ceil(wait)))
                message = f"too many requests; retry after {retry} s"
                return _error(request, 429, "RATE_LIMITED", message, **{"Retry-After": retry})
        return await handler(request)
