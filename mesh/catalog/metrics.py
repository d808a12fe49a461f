"""Prometheus metrics of the catalog ingestor."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class CatalogMetrics:
    """The catalog's metrics, registered on one worker's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "dictamesh_catalog_events",
            "Change events folded into the catalog: applied, or stale (not newer; ignored).",
            ["entity_type", "tenant", "result"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "dictamesh_catalog_dead_letters",
            "Events the catalog could not apply, sent to the dead-letter topic.",
            ["topic", "stage"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "dictamesh_catalog_batch_seconds",
            "Time to fold, publish and store one batch.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.batch_size = Histogram(
            "dictamesh_catalog_batch_events",
            "Events per batch.",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000),
            registry=registry,
        )
