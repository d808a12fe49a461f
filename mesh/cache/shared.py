"""Reads of other workers' keys, shared by the fleet through Redis.

Every key is a Redis hash ``{t: token, v: value}``. Readers and the owner of a key keep
one rule between them, each step one atomic Lua script:

* a reader looks the key up: a value is a hit; without one the reader takes the token
  (creating one if there is none), fetches the value from the owner, and stores it only
  if the token is still the one it took (:meth:`SharedCache.lookup`, :meth:`fill`);
* the owner, before it writes a change, gives every cached key it changes a new token and
  drops its value (:meth:`invalidate`).

A reader whose fetch raced a change therefore cannot store the old value: the change
replaced the token it holds. A key evicted or expired meanwhile has no token, which
matches none either. Nor can a fetch the owner answered between its invalidation and
its write: the answer says the key is pending, and the reader does not store it.
(Responses that read other workers' keys are kept valid by the owners' pushes,
:mod:`mesh.cache.peers`, with or without Redis.)

All keys of one call go to one Redis server (no cluster slot routing). The worker files
its keys under the fleet generation (:meth:`SharedCache.under`,
:mod:`mesh.cache.generation`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

_LOOKUP = """
local out = {}
for i, key in ipairs(KEYS) do
  local found = redis.call('HMGET', key, 't', 'v')
  local token = found[1]
  if not token then
    token = ARGV[1] .. ':' .. i
    redis.call('HSET', key, 't', token)
    redis.call('EXPIRE', key, ARGV[2])
  end
  out[i] = {token, found[2]}
end
return out
"""
_FILL = """
local ttl = ARGV[#ARGV]
for i, key in ipairs(KEYS) do
  if redis.call('HGET', key, 't') == ARGV[2 * i - 1] then
    redis.call('HSET', key, 'v', ARGV[2 * i])
    redis.call('EXPIRE', key, ttl)
  end
end
return 0
"""
_INVALIDATE = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 't', ARGV[1] .. ':' .. i)
    redis.call('HDEL', key, 'v')
    n = n + 1
  end
end
return n
"""
_CHUNK = 1000
"""Keys per script call: bounds how long one call holds the (single-threaded) server."""


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class SharedCache:
    """The fleet's Redis cache of keys read from other workers."""

    def __init__(self, client: Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = prefix.encode()
        self.ttl_s = ttl_s
        self._lookup = client.register_script(_LOOKUP)
        self._fill = client.register_script(_FILL)
        self._invalidate = client.register_script(_INVALIDATE)

    def under(self, generation: str) -> SharedCache:
        """The same cache with its keys filed under ``generation`` (sharing the connection
        pool): entries of one generation are never seen under another."""
        return SharedCache(self.client, f"{self.prefix.decode()}{generation}:", self.ttl_s)

    def _names(self, keys: Iterable[bytes]) -> list[bytes]:
        return [self.prefix + key for key in keys]

    async def lookup(self, keys: Sequence[bytes]) -> list[tuple[str, Any | None]]:
        """``(token, value)`` per key, in order; the value is ``None`` on a miss."""
        out: list[tuple[str, Any | None]] = []
        for start in range(0, len(keys), _CHUNK):
            names = self._names(keys[start : start + _CHUNK])
            found = await self._lookup(keys=names, args=[secrets.token_hex(8), self.ttl_s])
            for token, value in found:
                out.append((_text(token), None if value is None else orjson.loads(value)))
        return out

    async def fill(self, items: Sequence[tuple[bytes, str, Any]]) -> None:
        """Store ``(key, token, value)`` where the key still has that token."""
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            args: list[Any] = []
            for _, token, value in chunk:
                args += [token, orjson.dumps(value)]
            await self._fill(keys=self._names(k for k, _, _ in chunk), args=[*args, self.ttl_s])

    async def invalidate(self, keys: Iterable[bytes]) -> int:
        """New tokens, no values, for the cached ones of ``keys``; how many were cached."""
        names = self._names(keys)
        dropped = 0
        for start in range(0, len(names), _CHUNK):
            chunk = names[start : start + _CHUNK]
            dropped += int(await self._invalidate(keys=chunk, args=[secrets.token_hex(8)]))
        return dropped

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()
