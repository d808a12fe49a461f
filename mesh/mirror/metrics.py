"""Prometheus metrics of the Postgres mirror."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["MirrorMetrics"]


class MirrorMetrics:
    """The mirror's metrics, registered on one worker's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Gauge(
            "dictamesh_mirror_lag",
            "Records of an entity topic not yet in Postgres: the sum over this worker's "
            "partitions of the end offset minus the mirror's written position.",
            ["topic"],
            registry=registry,
        )
        self.rows = Counter(
            "dictamesh_mirror_rows",
            "Rows upserted (after collapsing each batch to the newest version per key; a "
            "row older than the stored one counts but changes nothing).",
            ["entity_type"],
            registry=registry,
        )
        self.errors = Counter(
            "dictamesh_mirror_errors",
            "Failures: 'database' (Postgres down or refusing a batch, retried), "
            "'registry' (unreachable, retried), 'decode' and 'write' (dead-lettered records), "
            "'internal' (anything else, retried).",
            ["kind"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "dictamesh_mirror_batch_seconds",
            "Duration of one batch: decode, upsert and commit in Postgres, dead letters, "
            "Kafka offset commit.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.up = Gauge(
            "dictamesh_mirror_up",
            "1 when the last write to Postgres succeeded, 0 when it failed.",
            registry=registry,
        )
