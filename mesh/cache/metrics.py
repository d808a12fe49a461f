"""Prometheus metrics of the read caches, hit ratio included."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CACHES = ("response", "shared")


class CacheMetrics(Collector):
    """Lookups (hit or miss), invalidations and failures per cache; the hit ratio, the
    response cache's size and the fleet generation are read when scraped."""

    def __init__(
        self,
        registry: CollectorRegistry,
        response_bytes: Callable[[], int],
        generation: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.lookups = Counter(
            "dictamesh_cache_lookups",
            "Cache lookups by cache (response: whole GraphQL responses in this worker; "
            "shared: keys of other workers in Redis) and result (hit, miss).",
            ["cache", "result"],
            registry=registry,
        )
        self.invalidated = Counter(
            "dictamesh_cache_invalidations",
            "Cached entries dropped because what they read changed.",
            ["cache"],
            registry=registry,
        )
        self.errors = Counter(
            "dictamesh_cache_errors",
            "Redis calls that failed (reads fall back to the owners; invalidations retry).",
            ["operation"],
            registry=registry,
        )
        self.pushes = Counter(
            "dictamesh_cache_peer_pushes",
            "Changed keys pushed to a worker holding a lease on them, by result (ok; "
            "failed: the lease was revoked and the change waited for it to end).",
            ["result"],
            registry=registry,
        )
        # Resolved once: looking a labelled child up costs more than counting with it.
        self._lookups = {
            (cache, result): self.lookups.labels(cache=cache, result=result)
            for cache in CACHES
            for result in ("hit", "miss")
        }
        self.hits = dict.fromkeys(CACHES, 0)
        self.misses = dict.fromkeys(CACHES, 0)
        self.response_bytes = response_bytes
        self.generation = generation
        self.lease_starts: Callable[[], int] = lambda: 0
        """Leases taken without an unbroken one before (set with the leases)."""
        registry.register(self)

    def hit(self, cache: str, n: int = 1) -> None:
        """Count ``n`` hits of ``cache``."""
        if n:
            self.hits[cache] += n
            self._lookups[(cache, "hit")].inc(n)

    def miss(self, cache: str, n: int = 1) -> None:
        """Count ``n`` misses of ``cache``."""
        if n:
            self.misses[cache] += n
            self._lookups[(cache, "miss")].inc(n)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        ratio = GaugeMetricFamily(
            "dictamesh_cache_hit_ratio",
            "Hits / lookups since the worker started (0 before any lookup).",
            labels=["cache"],
        )
        for cache in CACHES:
            total = self.hits[cache] + self.misses[cache]
            ratio.add_metric([cache], self.hits[cache] / total if total else 0.0)
        yield ratio
        yield GaugeMetricFamily(
            "dictamesh_cache_response_bytes",
            "Bytes held by this worker's response cache.",
            value=float(self.response_bytes()),
        )
        generation = GaugeMetricFamily(
            "dictamesh_fleet_generation_info",
            "The fleet generation the shared cache is used under (1); no sample while it "
            "is being read or without Redis. Every worker of a fleet shows the same one.",
            labels=["generation"],
        )
        current = self.generation()
        if current is not None:
            generation.add_metric([current], 1.0)
        yield generation
        yield CounterMetricFamily(
            "dictamesh_cache_lease_starts",
            "Leases on another worker's changes taken afresh (a new peer, or after one "
            "lapsed or was revoked): each makes every stored response that read other "
            "workers' keys unservable. Climbing steadily: peers miss their renewals.",
            value=float(self.lease_starts()),
        )
