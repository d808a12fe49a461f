"""Bearer tokens verified into principals, with PyJWT.

Only the algorithms of ``MESH_AUTH_ALGORITHMS`` are accepted (asymmetric ones: ``none``
and HMAC signed with the public key are refused before any key is looked at); ``exp``,
``iss``, ``aud`` and ``sub`` are required, ``nbf`` and ``iat`` honoured, all with
``MESH_AUTH_LEEWAY_S``. The tenant and the scopes come from the claims the settings name.

A verified token is kept until it expires: an RS256 check costs about half of a cached
read by id, and a client sends the same token again and again. The reason a token was
refused is for the log; the client is only told that its token is missing or invalid.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Any

import jwt

from mesh.auth.keys import JwksKeys, KeySource, PemKey, UnknownKeyError
from mesh.auth.peer import PeerSigner
from mesh.auth.principal import Principal
from mesh.errors import MeshError
from mesh.settings import Settings

CACHED_TOKENS = 10_000
"""Verified tokens kept (least recently used dropped first)."""


class AuthError(MeshError):
    """A request's bearer token is missing or invalid: HTTP 401. The message (why) is for
    the log; :attr:`public` is all the client is told."""

    def __init__(self, message: str, *, public: str = "invalid bearer token") -> None:
        super().__init__(message)
        self.public = public


def auth_config_problem(settings: Settings) -> str | None:
    """What keeps a worker with these settings from verifying tokens, if anything."""
    if settings.auth == "off":
        return None
    if (settings.auth_jwks_url is None) == (settings.auth_public_key_file is None):
        return (
            "MESH_AUTH=jwt needs exactly one of MESH_AUTH_JWKS_URL and "
            "MESH_AUTH_PUBLIC_KEY_FILE (MESH_AUTH=off only for local experiments)"
        )
    if not settings.auth_issuer:
        return "MESH_AUTH=jwt needs MESH_AUTH_ISSUER, the iss every token must carry"
    secret = settings.fleet_secret
    if secret is None or len(secret.get_secret_value()) < 32:
        return (
            "MESH_AUTH=jwt needs MESH_FLEET_SECRET, at least 32 characters shared by the "
            "fleet's workers (it signs their calls to each other)"
        )
    return None


def peer_signer(settings: Settings) -> PeerSigner | None:
    """The fleet's signer of peer calls (``None`` without ``MESH_FLEET_SECRET``)."""
    secret = settings.fleet_secret
    if secret is None or len(secret.get_secret_value()) < 32:
        return None
    return PeerSigner(secret.get_secret_value().encode())


def key_source(settings: Settings) -> KeySource:
    """The key source the settings name (checked by :func:`auth_config_problem`)."""
    if settings.auth_public_key_file is not None:
        return PemKey(settings.auth_public_key_file)
    assert settings.auth_jwks_url is not None
    return JwksKeys(settings.auth_jwks_url, min_refresh_s=settings.auth_jwks_refresh_s)


class TokenVerifier:
    """Turns an ``Authorization`` header into a :class:`Principal` or an :class:`AuthError`."""

    def __init__(
        self,
        settings: Settings,
        keys: KeySource,
        tenants: Collection[str],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert settings.auth_issuer is not None
        self.issuer = settings.auth_issuer
        self.audience = settings.auth_audience
        self.algorithms = list(settings.auth_algorithms)
        self.leeway = settings.auth_leeway_s
        self.max_bytes = settings.auth_max_token_bytes
        self.tenant_claim = settings.auth_tenant_claim
        self.scope_claim = settings.auth_scope_claim
        self.tenants = frozenset(tenants)
        self.keys = keys
        self.clock = clock
        self._verified: OrderedDict[str, Principal] = OrderedDict()

    async def verify(self, authorization: str | None) -> Principal:
        """The principal of a request whose ``Authorization`` header is ``authorization``."""
        token = _bearer(authorization)
        if len(token) > self.max_bytes:
            raise AuthError(f"a token of {len(token)} bytes (limit {self.max_bytes})")
        known = self._verified.get(token)
        if known is not None:
            if self.clock() < known.expires_at:
                self._verified.move_to_end(token)
                return known
            del self._verified[token]
        principal = await self._check(token)
        self._verified[token] = principal
        if len(self._verified) > CACHED_TOKENS:
            self._verified.popitem(last=False)
        return principal

    async def _check(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(f"not a JWT: {exc}") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise AuthError(f"algorithm {algorithm!r} is not one of {self.algorithms}")
        try:
            key = await self.keys.key_for(header.get("kid"))
        except UnknownKeyError as exc:
            raise AuthError(str(exc)) from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"token refused: {exc}") from None
        tenant = claims.get(self.tenant_claim)
        if not isinstance(tenant, str) or tenant not in self.tenants:
            raise AuthError(
                f"claim {self.tenant_claim!r} names no tenant of the config: {tenant!r}"
            )
        return Principal(
            subject=str(claims["sub"]),
            tenant=tenant,
            scopes=_scopes(claims.get(self.scope_claim), self.scope_claim),
            expires_at=float(claims["exp"]) + self.leeway,
        )

    async def close(self) -> None:
        await self.keys.close()


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthError("no Authorization header", public="missing bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(
            f"Authorization scheme {scheme!r}, not Bearer", public="missing bearer token"
        )
    return token.strip()


def _scopes(value: Any, claim: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return frozenset(value)
    raise AuthError(f"claim {claim!r} is neither a string nor a list of strings")
