"""The catalog's read side: which entity type and id a request names, where its key lives
(partition and owning worker) and reads of the partitions this worker owns.

REST and GraphQL are faces over this: ids are parsed, keys partitioned and ownership
decided here once, for both.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from mesh.catalog import record
from mesh.catalog.fold import ReverseRelation, reverse_relations
from mesh.context import MeshContext
from mesh.domain import EntitySpec, FieldType
from mesh.errors import ApiError
from mesh.runtime.partitioning import key_partition
from mesh.runtime.store import PartitionStore

MAX_ID_LENGTH = 255
_MAX_INT = {FieldType.INTEGER: 2**31 - 1, FieldType.LONG: 2**63 - 1}
_PARTITIONS_KEPT = 100_000
"""Keys whose partition a reader remembers (then it starts again)."""


def entity_spec(context: MeshContext, entity_type: str) -> EntitySpec:
    """The spec of ``entity_type``; 404 naming the known types when there is none."""
    spec = context.domain.entities.get(entity_type)
    if spec is None:
        known = sorted(context.domain.entities)
        raise ApiError(
            404,
            "unknown_type",
            f"no entity type {entity_type!r}; known types: {', '.join(known)}",
            known_types=known,
        )
    return spec


def parse_id(spec: EntitySpec, entity_type: str, raw: str) -> str:
    """``raw`` checked against the type of the entity's key field (400 if it cannot be one).

    Integer keys must be canonical decimal digits within the Avro type's range: ``007``
    would name a different URN than ``7`` and always miss, so it is refused, not guessed.
    """

    def invalid(why: str) -> ApiError:
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        return ApiError(400, "invalid_id", f"invalid {entity_type} id {shown!r}: {why}")

    if not raw:
        raise invalid("the id is empty")
    if len(raw) > MAX_ID_LENGTH:
        raise invalid(f"longer than {MAX_ID_LENGTH} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in raw):
        raise invalid("contains control characters")
    key_type = spec.fields[spec.key].type
    if key_type in _MAX_INT:
        if not (raw.isascii() and raw.isdigit()):
            raise invalid(f"the key '{spec.key}' is an {key_type.value}: use decimal digits")
        if len(raw) > 1 and raw[0] == "0":
            raise invalid("write the number without leading zeros")
        if int(raw) > _MAX_INT[key_type]:
            raise invalid(f"out of range for an {key_type.value} key")
    return raw


class CatalogReader:
    """Where a key lives (partition, owning worker) and reads of the local partition DBs."""

    def __init__(self, context: MeshContext) -> None:
        self.context = context
        self.app = context.app
        self.domain = context.domain
        self.membership = context.membership
        self.worker = context.settings.worker_name
        self.relations: list[ReverseRelation] = reverse_relations(context.domain)
        self._partitions: dict[tuple[str, bytes], int] = {}
        self._partitions_stamp: tuple[int, int] | None = None

    def table(self, entity_type: str) -> PartitionStore:
        """The entity table of ``entity_type``."""
        return self.context.catalog.entities[entity_type]

    def partition(self, entity_type: str, key: bytes) -> int:
        """The partition the producers' default partitioner picks for ``key``.

        The consumer hashes with the topic's metadata (its real partition count); before
        the consumer runs, the fleet's configured count is what topics are made with.
        """
        stamp = self.membership.stamp()
        if stamp != self._partitions_stamp:  # a partition count may have changed with it
            self._partitions.clear()
            self._partitions_stamp = stamp
        known = self._partitions.get((entity_type, key))
        if known is not None:
            return known
        found = self.membership.key_partition(self.domain.topic(entity_type), key)
        if found is None:
            return key_partition(key, self.context.settings.topic_partitions)
        # murmur2 is pure Python in aiokafka: remember what GraphQL asks again and again.
        if len(self._partitions) >= _PARTITIONS_KEPT:
            self._partitions.clear()
        if stamp is not None:
            self._partitions[(entity_type, key)] = found
        return found

    def owns(self, table: PartitionStore, partition: int) -> bool:
        """True when this worker actively owns ``partition`` of ``table``."""
        return table.owns(partition)

    def recovering(self) -> bool:
        """True while active partitions are being rebuilt from their changelogs."""
        return self.membership.recovering()

    def owner_url(self, table: PartitionStore, partition: int) -> str | None:
        """The web URL of the worker actively owning ``partition``, per Faust's assignor."""
        return self.membership.owner_url(table.name, table.changelog_topic, partition)

    def is_self(self, url: str) -> bool:
        """True when ``url`` is this worker's own web server."""
        return self.membership.is_self(url)

    def read(self, table: PartitionStore, partition: int, key: bytes) -> Any:
        """The decoded value of ``key`` in the local DB of ``partition`` (owned here)."""
        return record.loads(table.get(partition, key))
