"""Prometheus metrics of the GraphQL endpoint."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class GraphQLMetrics:
    """The GraphQL endpoint's metrics, registered on one worker's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "dictamesh_graphql_requests",
            "GraphQL requests executed, by outcome (ok, or errors when any error was returned).",
            ["outcome"],
            registry=registry,
        )
        self.batches = Counter(
            "dictamesh_graphql_batches",
            "Batched reads made by GraphQL requests: local (this worker's RocksDB partitions) "
            "or remote (one POST to the owning worker's internal entities endpoint).",
            ["kind"],
            registry=registry,
        )
        self.keys = Counter(
            "dictamesh_graphql_batch_keys",
            "Keys (entities and relation indexes) read through those batches.",
            ["kind"],
            registry=registry,
        )
