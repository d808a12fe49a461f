"""What a GraphQL request reads, where each read lives, and reads of the local partitions.

A read is a :class:`Key`: an entity record (``entity``, type, id) or the members of a
reverse relation of one parent (``relation``, ``customer.invoices``, parent id), always
of one tenant (the request's: keys carry no tenant, so none can name another). Both live
in the partition of the entity's URN (relation indexes are co-partitioned with their
parent), so the owner of a key is the owner of that URN's partition.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from mesh.cache import cache_key
from mesh.catalog.fold import ReverseRelation
from mesh.catalog.reader import CatalogReader
from mesh.runtime.store import PartitionStore

KeyKind = Literal["entity", "relation"]
_LOCATIONS_KEPT = 20_000
"""Keys whose location a worker remembers under one assignment (then it starts again):
about 7 MB at most per reader."""


def live(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """``record`` unless it is missing or deleted (then ``None``): what GraphQL shows."""
    return None if record is None or record.get("deleted") else record


class Key(NamedTuple):
    """One read: an entity record, or the present member ids of one reverse relation.

    A named tuple, not a dataclass: a request hashes and compares its keys again and again
    (the loader's caches, its batches), and a tuple does both in C where a frozen
    dataclass calls generated Python for each (about 1,000 times for a nested query)."""

    kind: KeyKind
    name: str
    """The entity type (``entity``) or the relation (``customer.invoices``)."""
    id: str
    """The entity id, or the parent's id for a relation."""

    def as_json(self) -> dict[str, str]:
        """The key as sent to the internal entities endpoint."""
        return {"kind": self.kind, "name": self.name, "id": self.id}

    @classmethod
    def from_json(cls, data: Any) -> Key:
        """The key from :meth:`as_json`; ``ValueError`` when it is not one."""
        if not isinstance(data, dict):
            raise ValueError("a key is an object {kind, name, id}")
        kind, name, key_id = data.get("kind"), data.get("name"), data.get("id")
        if kind not in ("entity", "relation"):
            raise ValueError(f"unknown key kind {kind!r}")
        if not isinstance(name, str) or not isinstance(key_id, str):
            raise ValueError("'name' and 'id' must be strings")
        return cls(kind, name, key_id)


class Location(NamedTuple):
    """Where a key lives: its partition and, when another worker owns it, that owner's URL;
    the table holding its value and its key there (worked out once per read; a named
    tuple, made cheaply for every key)."""

    partition: int
    owner: str | None
    """``None`` when this worker actively owns the partition."""
    store: PartitionStore
    """The table holding the value: the entity's, or the relation's index."""
    urn: bytes
    """The key in :attr:`store`: the URN of the entity, or of the relation's parent."""

    @property
    def cache_key(self) -> bytes:
        """The name the caches know the value by (see :mod:`mesh.cache.keys`)."""
        return cache_key(self.store.name, self.urn)


class LocalReads:
    """Locating keys and reading the owned ones from this worker's RocksDB partitions."""

    def __init__(self, reader: CatalogReader) -> None:
        self.reader = reader
        self.relations: dict[str, ReverseRelation] = {r.name: r for r in reader.relations}
        self._located: dict[tuple[Key, str, bool], Location] = {}
        """Keys located under the assignment :attr:`_stamp` (see :meth:`locate`)."""
        self._stamp: tuple[int, int] | None = None

    def entity_type(self, key: Key) -> str:
        """The entity type whose URN partitions ``key`` (a relation's parent type)."""
        if key.kind == "entity":
            if key.name not in self.reader.domain.entities:
                raise ValueError(f"unknown entity type {key.name!r}")
            return key.name
        relation = self.relations.get(key.name)
        if relation is None:
            raise ValueError(f"unknown relation {key.name!r}")
        return relation.parent_type

    def _store(self, key: Key) -> PartitionStore:
        if key.kind == "entity":
            return self.reader.table(key.name)
        return self.reader.context.catalog.relations[key.name]

    def locate(self, key: Key, tenant: str, *, forwarded: bool = False) -> Location:
        """Where ``key`` of ``tenant`` lives; :class:`UnavailableError` when nobody (or only
        we, stale) owns it.

        ``forwarded`` keys came from another worker: they are never sent on again, so stale
        assignment metadata mid-rebalance fails the read instead of bouncing it around.
        A location found while the assignment is steady is remembered until it changes.
        """
        # Under one steady assignment a key's location cannot change (the router keeps its
        # partitions and owners per assignment stamp too), so it is worked out once per
        # stamp, not once per read: a nested query reads some 150 keys. Stopping,
        # rebalancing and recovering are still checked on every call, as the router does.
        membership = self.reader.membership
        stamp = membership.stamp()  # None while rebalancing or recovering
        if stamp is not None and not membership.stopping():
            if stamp != self._stamp:
                self._located.clear()
                self._stamp = stamp
            known = self._located.get((key, tenant, forwarded))
            if known is not None:
                return known
        entity_type = self.entity_type(key)
        urn = self.reader.domain.urn(tenant, entity_type, key.id).encode()
        route = self.reader.router.route(entity_type, urn, forwarded=forwarded)
        found = Location(route.partition, route.owner, self._store(key), urn)
        if stamp is not None and stamp == self._stamp:
            if len(self._located) >= _LOCATIONS_KEPT:
                self._located.clear()
            self._located[(key, tenant, forwarded)] = found
        return found

    def read(self, key: Key, location: Location) -> Any:
        """The value of an owned key: the entity record (or ``None``), or the member ids."""
        if key.kind == "entity":
            return self.reader.read(location.store, location.partition, location.urn)
        relation = self.relations[key.name]
        return self.reader.members(relation, location.partition, location.urn)
