"""Which partition a key lands in: Kafka's default partitioner (murmur2), as producers use.

Tables, routing and ownership must agree with the producers on this, or a key's state
and the requests for it end up on different workers.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def key_partition(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions
