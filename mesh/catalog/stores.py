"""The catalog's tables of one worker, by what they hold."""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh.runtime.store import PartitionStore


@dataclass
class CatalogStores:
    """The catalog's tables of one worker."""

    entities: dict[str, PartitionStore] = field(default_factory=dict)
    """By entity type."""
    relations: dict[str, PartitionStore] = field(default_factory=dict)
    """By relation name (``customer.invoices``)."""

    def by_name(self) -> dict[str, PartitionStore]:
        """Every table by its name."""
        return {s.name: s for s in (*self.entities.values(), *self.relations.values())}
