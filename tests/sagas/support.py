"""What the saga tests share: a GraphQL client for sagas and Directus bookkeeping."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from mesh.domain import DomainConfig
from tests.fixtures.directus import ADMIN_EMAIL, ADMIN_PASSWORD, DirectusHandle
from tests.support.auth import bearer
from tests.support.directus_admin import DirectusAdmin
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker, start_following_fleet

WRITER = ("pii:read", "orders:write")
"""The scopes of a client that may place orders."""

SAGA_FIELDS = "id type status step error result history { event step attempt error }"
FINAL = ("COMPLETED", "COMPENSATED", "FAILED_COMPENSATION")


async def graphql(
    worker: MeshWorker,
    query: str,
    variables: dict[str, Any] | None = None,
    scopes: tuple[str, ...] = WRITER,
    tenant: str = "default",
) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(headers=bearer(tenant, scopes)) as http,
        http.post(f"{worker.base}/graphql", json={"query": query, "variables": variables}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


PLACE = f"""mutation Place($input: PlaceOrderInput!) {{
  placeOrder(input: $input) {{ {SAGA_FIELDS} }}
}}"""


async def place(
    worker: MeshWorker,
    customer: int,
    lines: Sequence[tuple[int | str, int]],
    key: str | None = None,
    scopes: tuple[str, ...] = WRITER,
    tenant: str = "default",
) -> dict[str, Any]:
    """``placeOrder``'s whole answer."""
    variables = {
        "input": {
            "customer": str(customer),
            "lines": [{"product": str(p), "quantity": q} for p, q in lines],
            "idempotencyKey": key or uuid.uuid4().hex,
        }
    }
    return await graphql(worker, PLACE, variables, scopes=scopes, tenant=tenant)


async def saga(worker: MeshWorker, sid: str) -> dict[str, Any] | None:
    answer = await graphql(worker, f'{{ saga(id: "{sid}") {{ {SAGA_FIELDS} }} }}')
    found: dict[str, Any] | None = (answer.get("data") or {}).get("saga")
    return found


async def finished(workers: list[MeshWorker], sid: str, timeout: float = 90) -> dict[str, Any]:
    """The saga once it reached a final status (asked of whichever worker answers)."""
    seen: dict[str, Any] = {}

    async def done() -> bool:
        for worker in workers:
            if not worker.running:
                continue
            try:
                found = await saga(worker, sid)
            except (aiohttp.ClientError, AssertionError):
                continue
            if found is not None:
                seen.update(found)
                return found["status"] in FINAL
        return False

    await wait_until(done, timeout=timeout, what=lambda: f"saga {sid} to end; last seen {seen}")
    return seen


@dataclass
class Shelf:
    """A product made for one test, so tests never share stock."""

    id: int
    stock: int


MADE: dict[str, list[int]] = {"customers": [], "products": []}
"""What the saga tests made in the session's Directus (removed by :func:`remove_made`)."""


async def new_product(admin: DirectusAdmin, stock: int, price: str = "12.50") -> Shelf:
    tag = uuid.uuid4().hex[:8]
    item = await admin.create(
        "products", {"sku": f"T-{tag}", "name": f"Test {tag}", "price": price, "stock": stock}
    )
    MADE["products"].append(int(item["id"]))
    return Shelf(int(item["id"]), stock)


async def new_customer(admin: DirectusAdmin, status: str = "active") -> int:
    item = await admin.create("customers", {"name": f"Buyer {time.time_ns()}", "status": status})
    MADE["customers"].append(int(item["id"]))
    return int(item["id"])


async def remove_made(admin: DirectusAdmin) -> None:
    """Delete what the tests made and what their sagas wrote (the session's Directus is
    shared: other tests compare its rows, e.g. the tenancy tests' two tenants)."""
    customers, products = MADE["customers"], MADE["products"]
    if products:
        for row in await rows_of(admin, "invoice_items", {"product": {"_in": products}}):
            await admin.delete("invoice_items", row["id"])
        for row in await rows_of(admin, "reservations", {"product": {"_in": products}}):
            await admin.delete("reservations", row["id"])
    if customers:
        for row in await rows_of(admin, "invoices", {"customer": {"_in": customers}}):
            await admin.delete("invoices", row["id"])
    for collection in ("products", "customers"):
        for item in MADE[collection]:
            await admin.delete(collection, item)
        MADE[collection].clear()


async def start_shop(
    cleanup: contextlib.AsyncExitStack,
    seeded: DirectusHandle,
    domain: DomainConfig,
    registry_url: str,
    *,
    app_id: str,
    root: Path,
    names: Sequence[str],
    partitions: int,
    env: Mapping[str, str],
) -> tuple[DirectusAdmin, list[MeshWorker]]:
    """The session's Directus as its admin, and workers ``names`` following it (see
    :func:`start_following_fleet`); at ``cleanup``, what the tests made is removed
    (:func:`remove_made`) before the workers stop."""
    http = await cleanup.enter_async_context(aiohttp.ClientSession())
    collections = [e.collection for e in domain.entities.values()]
    admin = await DirectusAdmin.login(http, seeded.url, ADMIN_EMAIL, ADMIN_PASSWORD, collections)
    workers = await start_following_fleet(
        cleanup, app_id=app_id, root=root, names=names, directus=seeded,
        registry_url=registry_url, partitions=partitions, env=env,
    )  # fmt: skip
    cleanup.push_async_callback(remove_made, admin)
    return admin, workers


async def stock_of(admin: DirectusAdmin, product: int) -> int:
    return int((await admin.item("products", product))["stock"])


async def rows_of(admin: DirectusAdmin, collection: str, where: dict[str, Any]) -> list[Any]:
    import json

    params = {"limit": "-1", "fields": "*", "filter": json.dumps(where)}
    return list(await admin.api.request("GET", f"/items/{collection}", params=params))


async def in_catalog(worker: MeshWorker, entity_type: str, entity_id: int, **fields: Any) -> None:
    """Wait until the catalog holds ``entity_type`` ``entity_id`` with ``fields``' values."""
    wanted = " ".join(fields) or "id"
    last: dict[str, Any] = {}

    async def there() -> bool:
        answer = await graphql(worker, f'{{ {entity_type}(id: "{entity_id}") {{ id {wanted} }} }}')
        found = (answer.get("data") or {}).get(entity_type)
        last["answer"] = answer
        return found is not None and all(found.get(k) == v for k, v in fields.items())

    await wait_until(there, timeout=30, what=lambda: f"{entity_type} {entity_id}: {last}")
