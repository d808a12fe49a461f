"""What points at an entity, asked of the catalog: used by adapters whose source changes
referencing rows without reporting it (see ``mesh.sources.directus.adapter``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from mesh.catalog.reader import CatalogReader
from mesh.catalog.router import ROUTED_HEADER
from mesh.errors import UnavailableError

Children = dict[str, list[str]]
"""Per child entity type, the ids of the children."""


def children_lookup(reader: CatalogReader) -> Callable[[str, str, str], Awaitable[Children]]:
    """``lookup(tenant, entity_type, entity_id)``: the ids of every entity whose reference
    points at it, by child type, read where the parent's key lives (the relation indexes
    are co-partitioned with it). :class:`UnavailableError` (retriable) while the fleet
    cannot tell; an entity the catalog never saw has no children."""

    async def lookup(tenant: str, entity_type: str, entity_id: str) -> Children:
        urn = reader.domain.urn(tenant, entity_type, entity_id).encode()
        route = reader.router.route(entity_type, urn)
        if route.owner is None:
            if reader.read(reader.table(entity_type), route.partition, urn) is None:
                return {}
            found: Children = {}
            for relation in reader.relations:
                if relation.parent_type == entity_type:
                    members = reader.members(relation, route.partition, urn)
                    found.setdefault(relation.child_type, []).extend(members)
            return found
        path = f"/api/v1/entities/{entity_type}/{quote(entity_id, safe='')}/relations"
        answer = await reader.router.ask(
            route.owner, path, headers={ROUTED_HEADER: reader.worker}, tenant=tenant
        )
        if answer.status == 404:
            return {}  # never seen by the catalog: nothing can point at it there
        what = f"the catalog's list of what points at {entity_type} {entity_id}"
        if answer.status != 200:
            raise UnavailableError(f"{what}: HTTP {answer.status}; retrying")
        try:
            reverse = answer.json()["reverse"]
            found = {}
            for relation in reverse.values():
                ids = [str(m["id"]) for m in relation["members"]]
                found.setdefault(relation["type"], []).extend(ids)
        except (ValueError, KeyError, TypeError) as exc:
            raise UnavailableError(f"{what}: unreadable answer ({exc!r}); retrying") from None
        return found

    return lookup
