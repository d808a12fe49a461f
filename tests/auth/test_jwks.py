"""Signing keys fetched from the issuer's JWKS (a real HTTP server here): a rotated key is
picked up, made-up key ids do not turn into a flood of fetches, and an issuer that is down
does not log anyone out."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from mesh_tooling.dev.process import free_port

from mesh.auth import AuthError, TokenVerifier
from mesh.auth.keys import JwksKeys
from mesh.settings import Settings

ISSUER = "https://issuer.example"


class Issuer:
    """A JWKS endpoint serving whichever keys the test sets; counts its requests."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.requests = 0
        self.down = False

    def add_key(self, kid: str) -> Any:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys[kid] = key
        return key

    async def jwks(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.down:
            return web.Response(status=503)
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return web.json_response({"keys": keys})

    def token(self, kid: str, key: Any = None) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": "dictamesh", "sub": "s", "exp": now + 600,
                  "tenant": "acme", "jti": uuid.uuid4().hex}  # fmt: skip
        pem = (key or self.keys[kid]).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return "Bearer " + jwt.encode(claims, pem, algorithm="RS256", headers={"kid": kid})


@pytest_asyncio.fixture
async def issuer() -> AsyncIterator[tuple[Issuer, str]]:
    issuer = Issuer()
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", issuer.jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield issuer, f"http://127.0.0.1:{port}/.well-known/jwks.json"
    await runner.cleanup()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _verifier(url: str, clock: Clock) -> tuple[TokenVerifier, JwksKeys]:
    settings = Settings(auth="jwt", auth_jwks_url=url, auth_issuer=ISSUER)
    keys = JwksKeys(url, min_refresh_s=30, clock=clock)
    return TokenVerifier(settings, keys, ["acme"]), keys


async def test_a_rotated_key_is_fetched_and_made_up_ids_are_rate_limited(
    issuer: tuple[Issuer, str],
) -> None:
    server, url = issuer
    old = server.add_key("k1")
    clock = Clock()
    verifier, _ = _verifier(url, clock)
    try:
        assert (await verifier.verify(server.token("k1"))).tenant == "acme"
        assert server.requests == 1

        # A flood of made-up key ids right after: at most one fetch for all of them.
        for n in range(50):
            with pytest.raises(AuthError):
                await verifier.verify(server.token(f"bogus-{n}", key=old))
        assert server.requests == 1  # the set was fetched less than 30 s ago

        # The issuer rotates: k2 is new, k1 withdrawn. Once the limit allows, k2 is fetched.
        server.add_key("k2")
        del server.keys["k1"]
        clock.now += 31
        assert (await verifier.verify(server.token("k2"))).subject == "s"
        assert server.requests == 2
        # A token of the withdrawn key, not seen before, is refused once the set says so.
        clock.now += 31
        with pytest.raises(AuthError):
            await verifier.verify(server.token("k1", key=old))
    finally:
        await verifier.close()


async def test_an_issuer_that_is_down_keeps_the_keys_already_fetched(
    issuer: tuple[Issuer, str],
) -> None:
    server, url = issuer
    server.add_key("k1")
    clock = Clock()
    verifier, _ = _verifier(url, clock)
    try:
        await verifier.verify(server.token("k1"))
        server.down = True
        clock.now += 7200  # the set is old: fetched again, which fails
        fresh = server.token("k1")  # a new token (not from the cache), same key
        assert (await verifier.verify(fresh)).tenant == "acme"
        assert server.requests == 2
    finally:
        await verifier.close()


async def test_an_unreachable_jwks_refuses_tokens_without_crashing() -> None:
    clock = Clock()
    verifier, _ = _verifier(f"http://127.0.0.1:{free_port()}/jwks", clock)
    key = Issuer()
    key.add_key("k1")
    try:
        with pytest.raises(AuthError):
            await verifier.verify(key.token("k1"))
    finally:
        await verifier.close()
