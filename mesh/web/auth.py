"""Authentication of the worker's web requests (:mod:`mesh.auth`), set up per worker."""

from __future__ import annotations

import logging
from typing import ClassVar

from prometheus_client import Counter

from mesh.auth.middleware import Gate, GateCounters, principal_of
from mesh.auth.principal import unauthenticated
from mesh.auth.ratelimit import RateLimiter
from mesh.auth.verifier import TokenVerifier, auth_config_problem, key_source, peer_signer
from mesh.context import MeshContext
from mesh.runtime.services import Service, add_service
from mesh.runtime.web import Request, Response, View, add_listener, add_middleware
from mesh.web.entities import json_response

WHOAMI_PATH = "/api/v1/whoami"

logger = logging.getLogger(__name__)


class _AuthService(Service):
    """Announces ``MESH_AUTH=off`` at start; closes the JWKS client on stop."""

    verifier: ClassVar[TokenVerifier | None]
    tenant: ClassVar[str]

    async def on_start(self) -> None:
        if self.verifier is None:
            logger.warning(
                "MESH_AUTH=off: requests are served WITHOUT authentication, every one with "
                "every scope, as tenant %r unless its X-Mesh-Tenant header names another. "
                "For benchmarks and local experiments only.",
                self.tenant,
            )

    async def on_stop(self) -> None:
        if self.verifier is not None:
            await self.verifier.close()


def register_auth(context: MeshContext) -> None:
    """Put the token gate in front of every view of ``context.app``.

    With ``MESH_AUTH=jwt`` and incomplete settings no verifier can be made: the worker
    refuses to start (:func:`mesh.app.run_worker`); an app built only to be inspected
    (``mesh topics``) gets a gate that refuses every token.
    """
    settings = context.settings
    tenants = tuple(context.domain.tenants)
    tenant = tenants[0]
    verifier = None
    if settings.auth == "jwt" and auth_config_problem(settings) is None:
        verifier = TokenVerifier(settings, key_source(settings), tenants)
    everyone = unauthenticated(tenant) if settings.auth == "off" else None
    offset = settings.peer_port_offset
    peer_port = settings.web_port + offset if offset else None
    limiter = None
    if settings.rate_limit_per_s > 0:
        limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    refused = Counter(
        "dictamesh_auth_refused",
        "Requests refused at the gate: missing or invalid token (401), a peer call without "
        "the fleet's signature (403), over the subject's rate limit (429).",
        ["reason"],
        registry=context.metrics,
    )
    gate = Gate(
        verifier,
        everyone,
        signer=peer_signer(settings),
        tenants=tenants,
        limiter=limiter,
        counters=GateCounters(refused=lambda reason: refused.labels(reason).inc()),
        peer_port=peer_port,
        audit=settings.audit_log,
    )
    add_middleware(context.app, gate.middleware())
    if peer_port is not None:
        add_listener(context.app, settings.web_bind, peer_port)

    class Auth(_AuthService):
        pass

    Auth.verifier = verifier
    Auth.tenant = tenant
    add_service(context.app, Auth)
    _register_whoami(context)


def _register_whoami(context: MeshContext) -> None:
    """``GET /api/v1/whoami``: who the request's token says it is (subject, tenant,
    scopes, expiry), to check a token against this fleet. ``POST`` answers the same
    (the body is ignored): the cheapest request through the whole gate, which is what
    ``mesh bench graphql`` measures GraphQL against."""

    @context.app.page(WHOAMI_PATH)
    class WhoAmI(View):
        async def get(self, request: Request) -> Response:
            principal = principal_of(request)
            if principal is None:  # the gate lets nobody through without one
                return json_response(self, {"error": {"code": "unauthenticated"}}, status=401)
            scopes = ["*"] if principal.every_scope else sorted(principal.scopes)
            return json_response(self, {
                "subject": principal.subject, "tenant": principal.tenant,
                "scopes": scopes, "expires_at": principal.expires_at,
            })  # fmt: skip

        async def post(self, request: Request) -> Response:
            return await self.get(request)
