"""Prometheus metrics of the source adapters, per source and collection."""

from __future__ import annotations

from enum import IntEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AdapterState(IntEnum):
    """What an adapter is doing; exported as ``dictamesh_source_state``."""

    STOPPED = 0
    SNAPSHOT = 1
    FOLLOWING = 2
    BACKOFF = 3


class SourceMetrics:
    """The adapters' metrics, registered on one worker's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["source"]
        self.lag = Gauge(
            "dictamesh_source_lag",
            "Change-feed entries not yet published (activity head id minus cursor).",
            ["source", "collection"],
            registry=registry,
        )
        self.cursor = Gauge(
            "dictamesh_source_cursor", "Position the adapter resumes from.", labels,
            registry=registry,
        )  # fmt: skip
        self.head = Gauge(
            "dictamesh_source_head",
            "Newest change-feed position seen per collection.",
            ["source", "collection"],
            registry=registry,
        )
        self.poll_seconds = Histogram(
            "dictamesh_source_poll_seconds",
            "Duration of one poll: read the feed and items, publish, advance the cursor.",
            labels,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.events = Counter(
            "dictamesh_source_events",
            "Change events published and acknowledged by Kafka.",
            ["source", "collection", "op"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "dictamesh_source_dead_letters",
            "Items sent to the dead-letter topic.",
            ["source", "collection"],
            registry=registry,
        )
        self.errors = Counter(
            "dictamesh_source_errors",
            "Failed source requests, by error class.",
            ["source", "error"],
            registry=registry,
        )
        self.state = Gauge(
            "dictamesh_source_state",
            "0 stopped (not owned here), 1 snapshot, 2 following the feed, 3 backing off.",
            labels,
            registry=registry,
        )
        self.backoff_seconds = Gauge(
            "dictamesh_source_backoff_seconds",
            "Delay of the current backoff (0 when not backing off).",
            labels,
            registry=registry,
        )

    def set_state(self, source: str, state: AdapterState) -> None:
        """Record what ``source``'s adapter is doing."""
        self.state.labels(source).set(int(state))
