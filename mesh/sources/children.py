"""What points at an entity, asked of the catalog: used by adapters whose source changes
referencing rows without reporting it (see ``mesh.sources.directus.adapter``)."""

from __future__ import annotations

from collections import defaultdict
from urllib.parse import quote

import aiohttp

from mesh.context import MeshContext
from mesh.errors import SourceError
from mesh.sources.base import ChildrenLookup

TIMEOUT_S = 10.0


def catalog_children(context: MeshContext) -> ChildrenLookup:
    """A lookup through this worker's own entity API, which routes to the key's owner."""
    base = str(context.app.conf.canonical_url).rstrip("/")

    async def children(entity_type: str, entity_id: str) -> dict[str, list[str]]:
        url = f"{base}/api/v1/entities/{entity_type}/{quote(entity_id, safe='')}/relations"
        what = f"the catalog's list of what points at {entity_type} {entity_id}"
        try:
            async with context.app.http_client.get(
                url, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
            ) as resp:
                if resp.status == 404:
                    return {}  # never seen by the catalog: nothing can point at it there
                if resp.status != 200:
                    raise SourceError(f"{what}: HTTP {resp.status}; retrying", retriable=True)
                body = await resp.json()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SourceError(f"{what}: {type(exc).__name__}; retrying", retriable=True) from None
        found: dict[str, list[str]] = defaultdict(list)
        for relation in body["reverse"].values():
            found[relation["type"]].extend(str(m["id"]) for m in relation["members"])
        return dict(found)

    return children
