"""The worker's read caches behind one object: what GraphQL reads through and what the
catalog invalidates.

The guarantee: once the catalog has written a change, no request that starts later is
answered from a cache with the value before it. The catalog calls :meth:`invalidate`
with the keys of each batch after Kafka acknowledged the batch and before it writes the
batch to RocksDB: first in Redis (the owner waits, retrying, while Redis does not answer:
skipping it could let a cached value outlive its change), then to every worker holding a
lease (:mod:`mesh.cache.peers`), then in this worker's memory with no ``await`` between
that and the write. While it does, the keys are *pending*: a peer reading one of them
from this worker is told so, and neither stores it in Redis nor caches a response built
from it (the old value is still the one in the table).

Redis keys are filed under the fleet generation (:mod:`mesh.cache.generation`), so that
what Redis holds from before Kafka's state was recreated is never read again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mesh.cache.generation import FleetGeneration
from mesh.cache.metrics import CacheMetrics
from mesh.cache.peers import PeerInvalidations
from mesh.cache.responses import Recorder, ResponseCache
from mesh.cache.shared import SharedCache
from mesh.runtime.generation import GenerationTopic, generation_topic, read_generation
from mesh.runtime.kafka import KafkaConnection
from mesh.settings import Settings

log = logging.getLogger(__name__)
REDIS_TIMEOUT_S = 2.0
_RETRY_MAX_S = 5.0


class ReadCache:
    """The response cache (``None``: off) and the shared cache (``None``: no Redis), the
    latter used under the fleet generation ``generation`` (required with it)."""

    def __init__(
        self,
        responses: ResponseCache | None,
        shared: SharedCache | None,
        metrics: CacheMetrics,
        generation: FleetGeneration | None = None,
    ) -> None:
        if shared is not None and generation is None:
            raise ValueError("the shared cache needs the fleet generation")
        self.responses = responses
        self.shared = shared
        self.metrics = metrics
        self.generation = generation
        self.peers: PeerInvalidations | None = None
        """Leases and pushes between workers; set once the fleet router exists."""
        self._under: tuple[str, SharedCache] | None = None
        self._pending: dict[bytes, int] = {}

    def _redis(self) -> SharedCache | None:
        """The shared cache under the generation this worker knows for certain; ``None``
        without Redis or while the generation is being read."""
        if self.shared is None or self.generation is None:
            return None
        current = self.generation.current
        if current is None:
            return None
        if self._under is None or self._under[0] != current:
            self._under = (current, self.shared.under(current))
        return self._under[1]

    def generation_changed(self, generation: str) -> None:
        """The fleet generation is not the one known before (or the first one read):
        forget the stored responses, whose remote reads were checked against the old one."""
        if self.responses is not None:
            self.responses.clear()

    def start(self) -> None:
        """Read the fleet generation (in the background) when Redis is used; renew the
        leases on peers' changes (in the background) when responses are cached."""
        if self.generation is not None:
            self.generation.check()
        if self.peers is not None:
            self.peers.start()

    # -- whole responses ---------------------------------------------------------------

    def response(self, request: Hashable) -> bytes | None:
        """The stored response body of ``request`` if it is still current, else ``None``."""
        if self.responses is None:
            return None
        entry = self.responses.get(request)
        if entry is not None and entry.owners and not self._covered(entry.owners, entry.epoch):
            self.responses.discard(request)
            entry = None
        if entry is None:
            self.metrics.miss("response")
            return None
        self.metrics.hit("response")
        return entry.body

    def record(self) -> Recorder | None:
        """A recorder for a request about to be executed (``None`` when nothing is stored)."""
        if self.responses is None:
            return None
        return self.responses.open(0 if self.peers is None else self.peers.held.epoch)

    def store(self, request: Hashable, body: bytes, recorder: Recorder) -> None:
        """Store the response of a finished request, if what it read allows."""
        if self.responses is None:
            return
        if recorder.owners and not self._covered(recorder.owners, recorder.epoch):
            return
        self.responses.put(request, body, recorder)

    def forget(self, recorder: Recorder) -> None:
        """The request ended (its response stored or not): stop recording it."""
        if self.responses is not None:
            self.responses.close(recorder)

    def _covered(self, owners: frozenset[str] | set[str], epoch: int) -> bool:
        return self.peers is not None and self.peers.covers(owners, epoch)

    # -- keys of other workers -----------------------------------------------------------

    async def lookup(self, keys: Sequence[bytes]) -> list[tuple[str, Any | None]] | None:
        """``(token, value or None)`` per key from Redis; ``None`` without Redis or when it
        fails or the fleet generation is being read (then the owners answer and nothing is
        stored)."""
        shared = self._redis()
        if shared is None or not keys:
            return None
        try:
            found = await shared.lookup(keys)
        except (RedisError, OSError) as exc:
            self._failed("lookup", exc)
            return None
        hits = sum(value is not None for _, value in found)
        self.metrics.hit("shared", hits)
        self.metrics.miss("shared", len(found) - hits)
        return found

    async def fill(self, items: Sequence[tuple[bytes, str, Any]]) -> None:
        """Store values fetched from their owners (see :meth:`SharedCache.fill`)."""
        shared = self._redis()
        if shared is None or not items:
            return
        try:
            # Under another generation than the lookup's (it changed meanwhile) the tokens
            # match nothing, so nothing is stored.
            await shared.fill(items)
        except (RedisError, OSError) as exc:
            self._failed("fill", exc)

    def _failed(self, operation: str, exc: Exception) -> None:
        self.metrics.errors.labels(operation=operation).inc()
        log.warning("Redis %s failed (%r); reading from the owning workers instead", operation, exc)

    # -- invalidation (the catalog) --------------------------------------------------------

    def wants_invalidations(self) -> bool:
        """Whether a batch's keys must be passed to :meth:`invalidate` at all."""
        return (
            self.shared is not None
            or (self.responses is not None and self.responses.busy())
            or (self.peers is not None and self.peers.listening())
        )

    def pending(self, key: bytes) -> bool:
        """Whether ``key`` is being invalidated: its stored value is about to change."""
        return key in self._pending

    async def invalidate(self, keys: set[bytes]) -> None:
        """Make every cached read of ``keys`` stale; call right before writing them."""
        for key in keys:
            self._pending[key] = self._pending.get(key, 0) + 1
        try:
            if self.shared is not None and keys:
                dropped = await self._invalidate_shared(keys)
                self.metrics.invalidated.labels(cache="shared").inc(dropped)
            if self.peers is not None and keys:
                await self.peers.push(keys)
            if self.responses is not None:
                dropped = self.responses.invalidate(keys)
                self.metrics.invalidated.labels(cache="response").inc(dropped)
        finally:
            # The caller writes with no await after this returns: no read comes between.
            for key in keys:
                left = self._pending[key] - 1
                if left:
                    self._pending[key] = left
                else:
                    del self._pending[key]

    async def _invalidate_shared(self, keys: set[bytes]) -> int:
        """Invalidate ``keys`` in Redis under the generation known when this returns:
        readers fill only under the generation they know, and a change must reach it."""
        assert self.generation is not None  # checked in __init__
        delay = 0.1
        while True:
            shared = self._redis()
            if shared is None:
                log.info("invalidation of %d keys waits for the fleet generation", len(keys))
                await self.generation.wait()
                continue
            generation = self.generation.current
            try:
                dropped = await shared.invalidate(keys)
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
                continue
            if self.generation.current == generation:
                return dropped
            # The group rebalanced meanwhile: readers may use another generation from now
            # on, so the change goes there too (invalidating more is always safe).

    def partitions_moved(self) -> None:
        """This worker's partitions are being reassigned: forget the stored responses,
        whose local keys' changes may be written elsewhere from now on, and read the fleet
        generation again (a rebalance is how a worker learns Kafka's state was reset)."""
        if self.responses is not None:
            self.responses.clear()
        if self.generation is not None:
            self.generation.check()

    async def close(self) -> None:
        """Stop renewing leases and reading the generation; close the Redis connections."""
        if self.peers is not None:
            await self.peers.close()
        if self.generation is not None:
            await self.generation.close()
        if self.shared is not None:
            await self.shared.close()


def build_read_cache(settings: Settings, registry: CollectorRegistry) -> ReadCache:
    """The caches ``settings`` ask for: responses unless ``MESH_GRAPHQL_CACHE_MB=0``, the
    shared cache when ``MESH_REDIS_URL`` is set."""
    responses = None
    if settings.graphql_cache_mb:
        responses = ResponseCache(settings.graphql_cache_mb * 1024 * 1024)
    shared = None
    generation = None
    if settings.redis_url is not None:
        client = Redis.from_url(
            settings.redis_url.get_secret_value(),
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        shared = SharedCache(client, f"{settings.app_id}:cache:", settings.cache_ttl_s)
        kafka = KafkaConnection.from_settings(settings)
        topic = GenerationTopic(
            generation_topic(settings.app_id),
            declare=settings.topic_declare,
            replication_factor=settings.replication_factor,
        )
        generation = FleetGeneration(lambda: read_generation(kafka, topic))
    metrics = CacheMetrics(
        registry,
        lambda: responses.bytes if responses else 0,
        lambda: generation.current if generation else None,
    )
    cache = ReadCache(responses, shared, metrics, generation)
    if generation is not None:
        generation.on_change = cache.generation_changed
    return cache
