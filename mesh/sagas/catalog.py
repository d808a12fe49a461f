"""Catalog reads for sagas: entities of one tenant by id, wherever in the fleet they live."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from mesh.catalog.reader import CatalogReader
from mesh.errors import UnavailableError
from mesh.graphql.loader import INTERNAL_ENTITIES_PATH
from mesh.graphql.reads import Key, live

__all__ = ["read_entities"]


async def read_entities(
    reader: CatalogReader, tenant: str, entity_type: str, ids: list[str]
) -> dict[str, dict[str, Any] | None]:
    """The live state of each entity (``None``: never seen, or deleted), by id.
    :class:`UnavailableError` (retriable) while the fleet cannot tell."""
    found: dict[str, dict[str, Any] | None] = {}
    remote: dict[str, list[str]] = defaultdict(list)
    table = reader.table(entity_type)
    for entity_id in dict.fromkeys(ids):
        urn = reader.domain.urn(tenant, entity_type, entity_id).encode()
        route = reader.router.route(entity_type, urn)
        if route.owner is None:
            record = live(reader.read(table, route.partition, urn))
            found[entity_id] = None if record is None else dict(record["state"])
        else:
            remote[route.owner].append(entity_id)
    for owner, wanted in remote.items():
        body = {"tenant": tenant, "keys": [Key("entity", entity_type, i).as_json() for i in wanted]}
        answer = await reader.router.ask(owner, INTERNAL_ENTITIES_PATH, method="POST", body=body)
        if answer.status != 200:
            raise UnavailableError(
                f"the worker owning {entity_type} entities answered HTTP {answer.status}; retrying"
            )
        for entity_id, result in zip(wanted, answer.json()["results"], strict=True):
            if "error" in result:
                raise UnavailableError(f"{entity_type} {entity_id}: {result['error']}")
            record = live(result["value"])
            found[entity_id] = None if record is None else dict(record["state"])
    return found
