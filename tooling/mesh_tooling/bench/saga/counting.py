"""The Directus requests of ``mesh bench saga`` counted: those the ceiling sends, by method
and collection (:class:`CountingDirectus`), and the writes Directus logged in its activity
(:func:`activity_head`, :func:`logged_writes`)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from mesh.sources.directus.client import DirectusClient as SagaDirectus
from mesh_tooling.dev.directus import DirectusClient


class CountingDirectus(SagaDirectus):
    """The sagas' Directus client, counting the calls the saga steps make, by method and
    collection (``GET reservations``: a read by query)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()

    async def items_where(
        self, collection: str, where: dict[str, Any], *, fields: str = "*", limit: int = -1
    ) -> list[dict[str, Any]]:
        self.calls[f"GET {collection}"] += 1
        return await super().items_where(collection, where, fields=fields, limit=limit)

    async def create_item(self, collection: str, values: dict[str, Any]) -> dict[str, Any]:
        self.calls[f"POST {collection}"] += 1
        return await super().create_item(collection, values)

    async def update_item(
        self, collection: str, item_id: str | int, values: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls[f"PATCH {collection}"] += 1
        return await super().update_item(collection, item_id, values)


async def activity_head(admin: DirectusClient) -> int:
    """The id of the newest row of Directus' activity log (0: none yet)."""
    rows = await admin.request(
        "GET", "/activity", params={"sort": "-id", "limit": "1", "fields": "id"}
    )
    return int(rows[0]["id"]) if rows else 0


async def logged_writes(
    admin: DirectusClient, user: str | None, after: int, upto: int
) -> Counter[str]:
    """``user``'s writes with activity ids in ``(after, upto]``, by
    ``"<collection> <action>"``."""
    where = {"id": {"_gt": after, "_lte": upto}, "user": {"_eq": user}}
    rows = await admin.request(
        "GET", "/activity",
        params={"filter": json.dumps(where), "fields": "collection,action", "limit": "-1"},
    )  # fmt: skip
    return Counter(f"{r['collection']} {r['action']}" for r in rows)
