"""The worker's read caches behind one object: what GraphQL reads through and what the
catalog invalidates.

The guarantee: once the catalog has written a change, no request that starts later is
answered from a cache with the value before it. The catalog calls :meth:`invalidate`
with the keys of each batch after Kafka acknowledged the batch and before it writes the
batch to RocksDB: first in Redis (the owner waits, retrying, while Redis does not answer:
skipping it could let a cached value outlive its change), then in this worker's memory
with no ``await`` between that and the write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mesh.cache.metrics import CacheMetrics
from mesh.cache.responses import Recorder, ResponseCache
from mesh.cache.shared import SharedCache
from mesh.settings import Settings

log = logging.getLogger(__name__)
REDIS_TIMEOUT_S = 2.0
_RETRY_MAX_S = 5.0


class ReadCache:
    """The response cache (``None``: off) and the shared cache (``None``: no Redis)."""

    def __init__(
        self,
        responses: ResponseCache | None,
        shared: SharedCache | None,
        metrics: CacheMetrics,
    ) -> None:
        self.responses = responses
        self.shared = shared
        self.metrics = metrics

    # -- whole responses ---------------------------------------------------------------

    async def response(self, request: Hashable) -> bytes | None:
        """The stored response body of ``request`` if it is still current, else ``None``."""
        if self.responses is None:
            return None
        entry = self.responses.get(request)
        if entry is not None and entry.remote:
            valid = await self._still_valid(entry.remote)
            # Checked again after the wait: a local change may have dropped it meanwhile.
            if not valid or self.responses.get(request) is not entry:
                self.responses.discard(request)
                entry = None
        if entry is None:
            self.metrics.miss("response")
            return None
        self.metrics.hit("response")
        return entry.body

    def record(self) -> Recorder | None:
        """A recorder for a request about to be executed (``None`` when nothing is stored)."""
        return None if self.responses is None else self.responses.open()

    def store(self, request: Hashable, body: bytes, recorder: Recorder) -> None:
        """Store the response of a finished request, if what it read allows."""
        if self.responses is not None:
            self.responses.put(request, body, recorder)

    def forget(self, recorder: Recorder) -> None:
        """The request ended (its response stored or not): stop recording it."""
        if self.responses is not None:
            self.responses.close(recorder)

    async def _still_valid(self, tokens: dict[bytes, str]) -> bool:
        if self.shared is None:
            return False
        try:
            return await self.shared.still_valid(tokens)
        except (RedisError, OSError) as exc:
            self._failed("validate", exc)
            return False

    # -- keys of other workers -----------------------------------------------------------

    async def lookup(self, keys: Sequence[bytes]) -> list[tuple[str, Any | None]] | None:
        """``(token, value or None)`` per key from Redis; ``None`` without Redis or when it
        fails (then the owners answer and nothing is stored)."""
        if self.shared is None or not keys:
            return None
        try:
            found = await self.shared.lookup(keys)
        except (RedisError, OSError) as exc:
            self._failed("lookup", exc)
            return None
        hits = sum(value is not None for _, value in found)
        self.metrics.hit("shared", hits)
        self.metrics.miss("shared", len(found) - hits)
        return found

    async def fill(self, items: Sequence[tuple[bytes, str, Any]]) -> None:
        """Store values fetched from their owners (see :meth:`SharedCache.fill`)."""
        if self.shared is None or not items:
            return
        try:
            await self.shared.fill(items)
        except (RedisError, OSError) as exc:
            self._failed("fill", exc)

    def _failed(self, operation: str, exc: Exception) -> None:
        self.metrics.errors.labels(operation=operation).inc()
        log.warning("Redis %s failed (%r); reading from the owning workers instead", operation, exc)

    # -- invalidation (the catalog) --------------------------------------------------------

    def wants_invalidations(self) -> bool:
        """Whether a batch's keys must be passed to :meth:`invalidate` at all."""
        return self.shared is not None or (self.responses is not None and self.responses.busy())

    async def invalidate(self, keys: set[bytes]) -> None:
        """Make every cached read of ``keys`` stale; call right before writing them."""
        if self.shared is not None and keys:
            delay = 0.1
            while True:
                try:
                    dropped = await self.shared.invalidate(keys)
                    break
                except (RedisError, OSError) as exc:
                    self.metrics.errors.labels(operation="invalidate").inc()
                    log.warning(
                        "Redis did not take the invalidation of %d keys (%r); the catalog "
                        "waits and retries in %.1f s: no cached value may outlive its change. "
                        "Check MESH_REDIS_URL and the Redis server.",
                        len(keys), exc, delay,
                    )  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RETRY_MAX_S)
            self.metrics.invalidated.labels(cache="shared").inc(dropped)
        if self.responses is not None:
            dropped = self.responses.invalidate(keys)
            self.metrics.invalidated.labels(cache="response").inc(dropped)

    def partitions_moved(self) -> None:
        """This worker's partitions are being reassigned: forget the stored responses,
        whose local keys' changes may be written elsewhere from now on."""
        if self.responses is not None:
            self.responses.clear()

    async def close(self) -> None:
        """Close the Redis connections."""
        if self.shared is not None:
            await self.shared.close()


def build_read_cache(settings: Settings, registry: CollectorRegistry) -> ReadCache:
    """The caches ``settings`` ask for: responses unless ``MESH_GRAPHQL_CACHE_MB=0``, the
    shared cache when ``MESH_REDIS_URL`` is set."""
    responses = None
    if settings.graphql_cache_mb:
        responses = ResponseCache(settings.graphql_cache_mb * 1024 * 1024)
    shared = None
    if settings.redis_url is not None:
        client = Redis.from_url(
            settings.redis_url.get_secret_value(),
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        shared = SharedCache(client, f"{settings.app_id}:cache:", settings.cache_ttl_s)
    metrics = CacheMetrics(registry, lambda: responses.bytes if responses else 0)
    return ReadCache(responses, shared, metrics)
