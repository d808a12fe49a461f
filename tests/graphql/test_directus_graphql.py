"""Changes made in Directus show up in GraphQL, on every worker, exactly as Directus has them.

The session's seeded Directus, and two ``python -m mesh worker`` processes following it (app
id ``graphql-directus``, 4 partitions per topic, a broker of their own so that events other
modules publish cannot fold in), so the entities of one query are spread over both workers.
An independent client, gql 3.5 over aiohttp, runs the issue's nested query on both workers
and the answer is compared with Directus' own state read through its REST API: first the
seed, then after renaming the customer, adding an invoice with items, re-pointing an item to
another product and deleting an invoice.

Directus is shared with other modules (``tests/dev/test_directus.py`` checks the seed's row
counts and that the first invoice was never updated): only rows made here are changed or
deleted, except customer 1's name, which is put back; rows made here are deleted at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from gql import Client, gql
from gql.transport.aiohttp import AIOHTTPTransport
from gql.transport.exceptions import TransportQueryError

from mesh.domain import DomainConfig
from tests.fixtures.directus import ADMIN_EMAIL, ADMIN_PASSWORD, DirectusHandle
from tests.support.auth import bearer
from tests.support.directus_admin import DirectusAdmin
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker, start_following_fleet

pytestmark = pytest.mark.directus

APP_ID = "graphql-directus"
PARTITIONS = 4
CUSTOMER = "1"
TIMEOUT = 30.0
"""Seconds a Directus change may take to show in GraphQL (normally one or two)."""
ISSUE_QUERY = """
{ customer(id: "1") { id name email invoices { id number status
    items { quantity product { sku name price } } } } }
"""


@dataclass
class Fleet:
    admin: DirectusAdmin
    workers: list[MeshWorker]
    made: list[tuple[str, int]] = field(default_factory=list)
    """Rows made here, (collection, id), deleted at the end (children first)."""

    async def create(self, collection: str, data: dict[str, Any]) -> int:
        item = await self.admin.create(collection, data)
        self.made.append((collection, int(item["id"])))
        return int(item["id"])

    async def delete(self, collection: str, item: int) -> None:
        await self.admin.delete(collection, item)
        self.made.remove((collection, item))

    async def remove_leftovers(self) -> None:
        for collection, item in reversed(self.made):
            with contextlib.suppress(Exception):
                await self.admin.delete(collection, item)
        self.made.clear()


@pytest_asyncio.fixture(scope="module")
async def fleet(
    seeded: DirectusHandle,
    sample_domain: DomainConfig,
    registry_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Fleet]:
    """Two workers following the session's Directus, the snapshot done."""
    root = tmp_path_factory.mktemp("graphql-directus")
    async with contextlib.AsyncExitStack() as cleanup:
        http = await cleanup.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        )
        collections = [e.collection for e in sample_domain.entities.values()]
        admin = await DirectusAdmin.login(
            http, seeded.url, ADMIN_EMAIL, ADMIN_PASSWORD, collections
        )
        workers = await start_following_fleet(
            cleanup, app_id=APP_ID, root=root, names=("gd-a", "gd-b"),
            directus=seeded, registry_url=registry_url, partitions=PARTITIONS,
        )  # fmt: skip
        fleet = Fleet(admin, workers)
        cleanup.push_async_callback(fleet.remove_leftovers)
        yield fleet


# -- Directus' state as the issue query would show it ------------------------------------------


async def directus_state(admin: DirectusAdmin) -> dict[str, Any]:
    """What ``ISSUE_QUERY`` must answer, read from Directus' REST API (ids in order)."""
    api = admin.api
    item = await admin.item("customers", CUSTOMER)
    invoices = await api.request(
        "GET",
        "/items/invoices",
        params={"filter[customer][_eq]": CUSTOMER, "sort": "id", "limit": "-1"},
    )
    invoice_ids = [str(i["id"]) for i in invoices]
    items: list[dict[str, Any]] = []
    if invoice_ids:
        items = await api.request(
            "GET",
            "/items/invoice_items",
            params={"filter[invoice][_in]": ",".join(invoice_ids), "sort": "id", "limit": "-1"},
        )
    product_ids = sorted({i["product"] for i in items if i["product"] is not None})
    products = {}
    if product_ids:
        rows = await api.request(
            "GET",
            "/items/products",
            params={"filter[id][_in]": ",".join(map(str, product_ids)), "limit": "-1"},
        )
        products = {p["id"]: p for p in rows}

    def shown(product_id: int | None) -> dict[str, Any] | None:
        if product_id is None:
            return None
        p = products[product_id]
        return {"sku": p["sku"], "name": p["name"], "price": p["price"]}

    return {
        "customer": {
            "id": str(item["id"]),
            "name": item["name"],
            "email": item["email"],
            "invoices": [
                {
                    "id": str(inv["id"]),
                    "number": inv["number"],
                    "status": inv["status"],
                    "items": [
                        {"quantity": it["quantity"], "product": shown(it["product"])}
                        for it in items
                        if it["invoice"] == inv["id"]
                    ],
                }
                for inv in invoices
            ],
        }
    }


async def run(worker: MeshWorker) -> Any:
    """``ISSUE_QUERY`` on ``worker`` with gql (an error answer is returned as the exception)."""
    transport = AIOHTTPTransport(url=f"{worker.base}/graphql", headers=bearer(), timeout=15)
    try:
        async with Client(transport=transport) as session:
            return await session.execute(gql(ISSUE_QUERY))
    except TransportQueryError as exc:
        return exc


async def shows(fleet: Fleet, expected: dict[str, Any], what: str) -> None:
    """Poll both workers until each answers exactly ``expected``."""
    last: dict[str, Any] = {}

    async def both() -> bool:
        answers = await asyncio.gather(*(run(w) for w in fleet.workers))
        last.update({w.name: a for w, a in zip(fleet.workers, answers, strict=True)})
        return all(a == expected for a in answers)

    await wait_until(
        both,
        timeout=TIMEOUT,
        what=lambda: f"GraphQL to show {what}: want {expected}, got {last}",
        interval=0.2,
    )


async def test_directus_changes_show_in_graphql_on_both_workers(fleet: Fleet) -> None:
    admin = fleet.admin
    seed = await directus_state(admin)
    invoices = seed["customer"]["invoices"]
    # The seed gives the query something to nest (else the test proves little).
    assert invoices, seed
    assert any(inv["items"] for inv in invoices), seed
    await shows(fleet, seed, "the seed")

    original_name = seed["customer"]["name"]
    products = await admin.api.request(
        "GET", "/items/products", params={"sort": "id", "limit": "3"}
    )
    p1, p2, p3 = (int(p["id"]) for p in products)
    try:
        # 1. Rename the customer.
        await admin.update("customers", CUSTOMER, {"name": "Renamed «GraphQL» 顧客"})
        # 2. An invoice with items for customer 1, and a second one to delete later.
        kept = await fleet.create(
            "invoices",
            {"number": "GQL-KEEP", "customer": int(CUSTOMER), "status": "open", "total": "3.10"},
        )
        gone = await fleet.create(
            "invoices",
            {"number": "GQL-GONE", "customer": int(CUSTOMER), "status": "draft", "total": "1.00"},
        )
        first = await fleet.create(
            "invoice_items",
            {"invoice": kept, "product": p1, "quantity": 2, "unit_price": "1.05"},
        )
        await fleet.create(
            "invoice_items",
            {"invoice": kept, "product": p2, "quantity": 7, "unit_price": "0.30"},
        )
        doomed = await fleet.create(
            "invoice_items",
            {"invoice": gone, "product": p2, "quantity": 1, "unit_price": "1.00"},
        )
        changed = await directus_state(admin)
        assert [i["number"] for i in changed["customer"]["invoices"]][-2:] == [
            "GQL-KEEP",
            "GQL-GONE",
        ]
        await shows(fleet, changed, "the rename and the new invoices")

        # 3. Re-point an item to another product.
        await admin.update("invoice_items", first, {"product": p3})
        changed = await directus_state(admin)
        await shows(fleet, changed, "the re-pointed item")

        # 4. Delete an invoice (its item first: the schema would only null its field).
        await fleet.delete("invoice_items", doomed)
        await fleet.delete("invoices", gone)
        changed = await directus_state(admin)
        assert "GQL-GONE" not in str(changed)
        await shows(fleet, changed, "the deleted invoice")
    finally:
        await admin.update("customers", CUSTOMER, {"name": original_name})
        await fleet.remove_leftovers()
    # Back to the seed (the name restored, the rows made here deleted), in GraphQL too.
    restored = await directus_state(admin)
    assert restored == seed
    await shows(fleet, seed, "the seed again")
