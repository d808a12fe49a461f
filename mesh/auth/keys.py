"""Where token signatures are checked against: a PEM public key file, or the issuer's JWKS.

PyJWT's own ``PyJWKClient`` fetches with urllib, blocking the event loop that serves every
request; the JWKS is fetched here with aiohttp into a ``PyJWKSet`` instead. A token naming
a key id the set does not hold (the issuer rotated its keys) fetches the set again, at
most once per ``MESH_AUTH_JWKS_REFRESH_S``, so a flood of made-up key ids cannot turn into
a flood of requests to the issuer; the set is also fetched again when it is an hour old.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKSetError

from mesh.errors import ConfigError, MeshError

logger = logging.getLogger(__name__)

MAX_AGE_S = 3600.0
FETCH_TIMEOUT_S = 5.0


class UnknownKeyError(MeshError):
    """No key verifies this token (unknown key id, the issuer unreachable): a 401."""


class KeySource(Protocol):
    """Gives the key a token's signature is checked with."""

    async def key_for(self, kid: str | None) -> Any: ...

    async def close(self) -> None: ...


class PemKey:
    """One public key from a PEM file, whatever key id a token names."""

    def __init__(self, path: Path) -> None:
        try:
            self.key = load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read a PEM public key from {path}: {exc}", key="MESH_AUTH_PUBLIC_KEY_FILE"
            ) from None

    async def key_for(self, kid: str | None) -> Any:
        return self.key

    async def close(self) -> None:
        return None


class JwksKeys:
    """The keys an issuer publishes at a JWKS URL, fetched again on rotation."""

    def __init__(self, url: str, *, min_refresh_s: float, clock: Any = time.monotonic) -> None:
        self.url = url
        self.min_refresh_s = min_refresh_s
        self.clock = clock
        self.fetches = 0
        """How many times the set was fetched (rate limiting is tested on it)."""
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None

    async def key_for(self, kid: str | None) -> Any:
        now = self.clock()
        if self._fetched_at is None or now - self._fetched_at >= MAX_AGE_S:
            await self._refresh(now)
        found = self._lookup(kid)
        stale = self._fetched_at is None or now - self._fetched_at >= self.min_refresh_s
        if found is None and stale:
            await self._refresh(now)  # perhaps a rotation: the issuer has a new key
            found = self._lookup(kid)
        if found is None:
            raise UnknownKeyError(f"no key with id {kid!r} in the JWKS at {self.url}")
        return found.key

    def _lookup(self, kid: str | None) -> PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh(self, now: float) -> None:
        async with self._lock:
            if self._fetched_at is not None and now - self._fetched_at < self.min_refresh_s:
                return  # another request refreshed it meanwhile
            self._fetched_at = now  # counts as an attempt even if it fails: rate-limited
            self.fetches += 1
            try:
                if self._http is None:
                    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
                    self._http = aiohttp.ClientSession(timeout=timeout)
                async with self._http.get(self.url) as resp:
                    resp.raise_for_status()
                    data = await resp.json(content_type=None)
                keys = PyJWKSet.from_dict(data).keys
            except (aiohttp.ClientError, TimeoutError, ValueError, PyJWKSetError) as exc:
                # Keep the keys we have: an issuer briefly down must not log everyone out.
                logger.warning("Cannot fetch the JWKS at %s: %r", self.url, exc)
                return
            self._keys = {key.key_id: key for key in keys}

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
