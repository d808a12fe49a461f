"""The catalog's read side: which entity type and id a request names, where its key lives
(partition and owning worker, asked of :mod:`mesh.catalog.router`) and reads of the
partitions this worker owns.

REST and GraphQL are faces over this: ids are parsed, keys partitioned and ownership
decided here once, for both.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from mesh.catalog import record
from mesh.catalog.fold import ReverseRelation, present_members, reverse_relations
from mesh.catalog.router import FleetRouter
from mesh.context import MeshContext
from mesh.domain import EntitySpec, FieldType
from mesh.errors import ApiError
from mesh.runtime.store import PartitionStore
from mesh.tables.catalog import read_members

MAX_ID_LENGTH = 255
_MAX_INT = {FieldType.INTEGER: 2**31 - 1, FieldType.LONG: 2**63 - 1}


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
    """Reads of the local partition DBs, with the fleet router that says where a key lives."""

    def __init__(self, context: MeshContext) -> None:
        self.context = context
        self.app = context.app
        self.domain = context.domain
        self.membership = context.membership
        self.worker = context.settings.worker_name
        self.router = FleetRouter(context)
        self.relations: list[ReverseRelation] = reverse_relations(context.domain)

    def table(self, entity_type: str) -> PartitionStore:
        """The entity table of ``entity_type``."""
        return self.context.catalog.entities[entity_type]

    def recovering(self) -> bool:
        """True while active partitions are being rebuilt from their changelogs."""
        return self.membership.recovering()

    def read(self, table: PartitionStore, partition: int, key: bytes) -> Any:
        """The decoded value of ``key`` in the local DB of ``partition`` (owned here)."""
        return record.loads(table.get(partition, key))

    def members(self, relation: ReverseRelation, partition: int, parent: bytes) -> list[str]:
        """The present member ids of ``relation`` for the parent URN ``parent`` (its index is
        co-partitioned with the parent entity, so ``partition`` is the parent's)."""
        store = self.context.catalog.relations[relation.name]
        return present_members(read_members(store, partition, parent))
