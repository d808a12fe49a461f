"""Directus as its admin sees it, through its REST API: items and the activity log.

:class:`DirectusAdmin` makes the edits the end-to-end tests feed the mesh with and reads
back the truth they compare with; :func:`entity_of` names the entity type a collection
feeds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from mesh_tooling.dev.directus import DirectusClient

from mesh.domain import DomainConfig, EntitySpec

FEED_ACTIONS = ("create", "update", "delete")
"""The activity log actions that change an item."""


@dataclass(frozen=True)
class Activity:
    """One row of Directus' activity log that changed an item."""

    id: int
    action: str
    collection: str
    item: str
    timestamp: datetime


class DirectusAdmin:
    """Directus' REST API as its admin: write items, read items and the activity log.

    Connections are not kept alive, so a restarted Directus is reached at once.
    """

    def __init__(self, api: DirectusClient, collections: Sequence[str]) -> None:
        self.api = api
        self.collections = list(collections)

    @classmethod
    async def login(
        cls,
        http: aiohttp.ClientSession,
        url: str,
        email: str,
        password: str,
        collections: Sequence[str],
    ) -> DirectusAdmin:
        """Log in as ``email`` on the Directus at ``url``."""
        return cls(await DirectusClient.login(http, url, email, password), collections)

    async def create(self, collection: str, data: Any) -> Any:
        """``POST /items/{collection}``: one item (a dict) or many (a list)."""
        return await self.api.request("POST", f"/items/{collection}", data)

    async def update(self, collection: str, item: object, patch: Mapping[str, Any]) -> Any:
        """``PATCH /items/{collection}/{item}``."""
        return await self.api.request("PATCH", f"/items/{collection}/{item}", dict(patch))

    async def delete(self, collection: str, item: object) -> None:
        """``DELETE /items/{collection}/{item}``."""
        await self.api.request("DELETE", f"/items/{collection}/{item}")

    async def item(self, collection: str, item: object) -> dict[str, Any]:
        """``GET /items/{collection}/{item}``."""
        return dict(await self.api.request("GET", f"/items/{collection}/{item}"))

    async def items(self, collection: str, ids: Iterable[object] | None = None) -> list[Any]:
        """Items of ``collection`` sorted by id: all, or those with ``ids``."""
        params = {"limit": "-1", "sort": "id", "fields": "*"}
        if ids is not None:
            params["filter"] = json.dumps({"id": {"_in": [str(i) for i in ids]}})
        return list(await self.api.request("GET", f"/items/{collection}", params=params))

    async def activity(self, after: int = 0) -> list[Activity]:
        """Item changes of the domain collections with id > ``after``, oldest first."""
        query = {
            "id": {"_gt": after},
            "collection": {"_in": self.collections},
            "action": {"_in": list(FEED_ACTIONS)},
        }
        rows = await self.api.request(
            "GET",
            "/activity",
            params={
                "filter": json.dumps(query),
                "sort": "id",
                "limit": "-1",
                "fields": "id,action,collection,item,timestamp",
            },
        )
        return [
            Activity(
                id=int(r["id"]),
                action=str(r["action"]),
                collection=str(r["collection"]),
                item=str(r["item"]),
                timestamp=datetime.fromisoformat(str(r["timestamp"])).astimezone(UTC),
            )
            for r in rows
        ]

    async def head(self) -> int:
        """The newest activity id that changed an item of the domain (0 if none)."""
        query = {"collection": {"_in": self.collections}, "action": {"_in": list(FEED_ACTIONS)}}
        rows = await self.api.request(
            "GET",
            "/activity",
            params={"filter": json.dumps(query), "sort": "-id", "limit": "1", "fields": "id"},
        )
        return int(rows[0]["id"]) if rows else 0


async def counts(api: DirectusClient, domain: DomainConfig) -> dict[str, int]:
    """Rows per collection of the domain, as Directus counts them."""
    out = {}
    for entity in domain.entities.values():
        data = await api.request(
            "GET", f"/items/{entity.collection}", params={"aggregate[count]": "*"}
        )
        out[entity.collection] = int(data[0]["count"])
    return out


def entity_of(domain: DomainConfig, collection: str) -> tuple[str, EntitySpec]:
    """The entity type (name and spec) fed by ``collection``."""
    return next((n, e) for n, e in domain.entities.items() if e.collection == collection)
