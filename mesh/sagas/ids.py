"""Saga ids: derived from the tenant, the saga type and the client's idempotency key, so a
retried request lands on the same saga (and the same partition, hence the same owner)."""

from __future__ import annotations

import uuid

from mesh.runtime.partitioning import key_partition

__all__ = ["saga_id", "saga_partition"]

_NAMESPACE = uuid.UUID("6f0f9a1e-3c55-4b8e-9a53-5d0c2a7e4b11")


def saga_id(tenant: str, saga_type: str, idempotency_key: str) -> str:
    """The saga id for a request (a UUID 5: stable, and opaque to whoever reads it)."""
    return str(uuid.uuid5(_NAMESPACE, f"{tenant}\x00{saga_type}\x00{idempotency_key}"))


def saga_partition(saga: str, partitions: int) -> int:
    """The saga table's partition holding ``saga`` (Kafka's murmur2 partitioning)."""
    return key_partition(saga.encode(), partitions)
