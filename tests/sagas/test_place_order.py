"""The "place order" saga on two real workers writing to the session's real Directus.

Every test makes its own customer and products (so stock is never shared between tests),
waits until the catalog holds them, places orders through GraphQL and checks Directus
itself: stock, reservations, invoices and items.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer

from mesh.codec import RegistryClient
from mesh.codec.avro import AvroEventCodec
from mesh.domain import DomainConfig
from mesh.sagas.events import SAGA_CHANGED_SCHEMA, SAGA_CHANGED_TOPIC
from tests.fixtures.directus import DirectusHandle
from tests.sagas.support import (
    finished,
    graphql,
    in_catalog,
    new_customer,
    new_product,
    place,
    rows_of,
    start_shop,
    stock_of,
)
from tests.support.auth import bearer
from tests.support.directus_admin import DirectusAdmin
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker

pytestmark = pytest.mark.directus

APP_ID = "sagas"


@dataclass
class Shop:
    workers: list[MeshWorker]
    admin: DirectusAdmin


@pytest_asyncio.fixture(scope="module")
async def shop(
    seeded: DirectusHandle,
    sample_domain: DomainConfig,
    registry_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Shop]:
    root = tmp_path_factory.mktemp("sagas")
    async with contextlib.AsyncExitStack() as cleanup:
        admin, workers = await start_shop(
            cleanup, seeded, sample_domain, registry_url, app_id=APP_ID, root=root,
            names=("sg-a", "sg-b"), partitions=4, env={"MESH_SAGA_DEADLINE_S": "30"},
        )  # fmt: skip
        yield Shop(workers, admin)


async def _ready(shop: Shop, customer: int, *products: int) -> None:
    worker = shop.workers[0]
    await in_catalog(worker, "customer", customer)
    for product in products:
        await in_catalog(worker, "product", product)


async def test_an_order_reserves_stock_and_issues_its_invoice(shop: Shop) -> None:
    admin = shop.admin
    customer = await new_customer(admin)
    a, b = await new_product(admin, 5, "10.00"), await new_product(admin, 3, "2.50")
    await _ready(shop, customer, a.id, b.id)

    answer = await place(shop.workers[1], customer, [(a.id, 2), (b.id, 3)])
    assert "errors" not in answer, answer
    started = answer["data"]["placeOrder"]
    assert started["status"] in ("RUNNING", "COMPLETED")
    saga = await finished(shop.workers, started["id"])
    assert saga["status"] == "COMPLETED", (saga["error"], saga["history"])
    events = [(h["event"], h["step"]) for h in saga["history"]]
    assert events[0] == ("STARTED", None)
    assert events[-1] == ("COMPLETED", None)
    for step in ("check_order", "reserve_stock", "create_invoice", "issue_invoice"):
        assert ("STEP_SUCCEEDED", step) in events

    assert await stock_of(admin, a.id) == 3
    assert await stock_of(admin, b.id) == 0
    held = await rows_of(admin, "reservations", {"saga": {"_eq": saga["id"]}})
    assert sorted((r["product"], r["quantity"], r["status"]) for r in held) == [
        (a.id, 2, "held"), (b.id, 3, "held"),
    ]  # fmt: skip
    [invoice] = await rows_of(admin, "invoices", {"saga_key": {"_eq": saga["id"]}})
    assert invoice["status"] == "issued"
    assert invoice["issued_at"]
    assert invoice["customer"] == customer
    assert invoice["total"] == "27.50"
    items = await rows_of(admin, "invoice_items", {"invoice": {"_eq": invoice["id"]}})
    assert sorted((i["product"], i["quantity"]) for i in items) == [(a.id, 2), (b.id, 3)]

    # The invoice flows back through capture: the customer's invoices show it.
    query = f'{{ customer(id: "{customer}") {{ invoices {{ id status items {{ quantity }} }} }} }}'
    seen: dict[str, object] = {}

    async def shown() -> bool:
        found = await graphql(shop.workers[0], query)
        seen["answer"] = found
        invoices = ((found.get("data") or {}).get("customer") or {}).get("invoices") or []
        return any(i["id"] == str(invoice["id"]) and i["status"] == "issued" and
                   len(i["items"]) == 2 for i in invoices)  # fmt: skip

    await wait_until(shown, timeout=30, what=lambda: f"the order in customer.invoices: {seen}")


async def test_the_same_idempotency_key_is_the_same_saga(shop: Shop) -> None:
    admin = shop.admin
    customer = await new_customer(admin)
    product = await new_product(admin, 4)
    await _ready(shop, customer, product.id)
    key = uuid.uuid4().hex
    first = await place(shop.workers[0], customer, [(product.id, 1)], key)
    second = await place(shop.workers[1], customer, [(product.id, 1)], key)
    sid = first["data"]["placeOrder"]["id"]
    assert second["data"]["placeOrder"]["id"] == sid
    assert (await finished(shop.workers, sid))["status"] == "COMPLETED"
    third = await place(shop.workers[1], customer, [(product.id, 1)], key)
    assert third["data"]["placeOrder"]["id"] == sid
    assert third["data"]["placeOrder"]["status"] == "COMPLETED"
    assert await stock_of(admin, product.id) == 3  # reserved once
    assert len(await rows_of(admin, "invoices", {"saga_key": {"_eq": sid}})) == 1


@pytest.mark.parametrize("case", ["insufficient stock", "inactive customer", "unknown product"])
async def test_a_refused_order_compensates_and_leaves_directus_as_it_was(
    shop: Shop, case: str
) -> None:
    admin = shop.admin
    customer = await new_customer(admin, "inactive" if case == "inactive customer" else "active")
    a, b = await new_product(admin, 6), await new_product(admin, 1)
    await _ready(shop, customer, a.id, b.id)
    lines = [(a.id, 2), (b.id, 2 if case == "insufficient stock" else 1)]
    if case == "unknown product":
        lines.append((999_999_999, 1))
    answer = await place(shop.workers[0], customer, lines)
    saga = await finished(shop.workers, answer["data"]["placeOrder"]["id"])
    assert saga["status"] == "COMPENSATED", saga
    expected = {
        "insufficient stock": f"not enough stock of product {b.id}: 1 left, 2 ordered",
        "inactive customer": f"customer {customer} is 'inactive'",
        "unknown product": "unknown product(s): 999999999",
    }[case]
    assert expected in saga["error"], saga["error"]
    # Directus exactly as before: stock, no reservation held, no live invoice.
    assert (await stock_of(admin, a.id), await stock_of(admin, b.id)) == (6, 1)
    rows = await rows_of(admin, "reservations", {"saga": {"_eq": saga["id"]}})
    assert all(r["status"] == "released" for r in rows), rows
    if case == "insufficient stock":
        assert [(r["product"], r["quantity"]) for r in rows] == [(a.id, 2)]  # held, then released
    invoices = await rows_of(admin, "invoices", {"saga_key": {"_eq": saga["id"]}})
    assert all(i["status"] == "cancelled" for i in invoices)


async def test_malformed_orders_are_refused_before_any_saga_starts(shop: Shop) -> None:
    worker = shop.workers[0]
    before = await graphql(worker, "{ sagas(first: 100) { nodes { id } } }")
    bad: dict[str, tuple[list[tuple[int | str, int]], str]] = {
        "quantity 0": ([(1, 0)], "quantity must be a positive integer"),
        "negative": ([(1, -3)], "quantity must be a positive integer"),
        "too many lines": ([(p, 1) for p in range(1, 52)], "at most 50 lines"),
        "non-numeric id": ([("abc", 1)], "product must be a numeric id"),
        "no lines": ([], "at least one line"),
    }
    for name, (lines, message) in bad.items():
        answer = await place(worker, 1, lines)
        assert answer.get("data") is None or answer["data"].get("placeOrder") is None, name
        assert message in answer["errors"][0]["message"], (name, answer)
    no_scope = await place(worker, 1, [(1, 1)], scopes=("pii:read",))
    assert "orders:write" in no_scope["errors"][0]["message"]
    # The second tenant's Directus is not enabled here: nothing to write to.
    beta = await place(worker, 1, [(1, 1)], tenant="beta")
    assert "tenant beta has no enabled Directus source" in beta["errors"][0]["message"]
    after = await graphql(worker, "{ sagas(first: 100) { nodes { id } } }")
    assert after == before


async def test_a_saga_is_read_by_rest_in_its_own_tenant_only(shop: Shop) -> None:
    admin = shop.admin
    customer = await new_customer(admin)
    product = await new_product(admin, 2)
    await _ready(shop, customer, product.id)
    sid = (await place(shop.workers[0], customer, [(product.id, 1)]))["data"]["placeOrder"]["id"]
    await finished(shop.workers, sid)
    for worker in shop.workers:
        async with (
            aiohttp.ClientSession(headers=bearer()) as http,
            http.get(f"{worker.base}/api/v1/sagas/{sid}") as resp,
        ):
            assert resp.status == 200
            body = await resp.json()
            assert body["id"] == sid
            assert body["status"] == "COMPLETED"
            assert body["input"]["lines"] == [{"product": str(product.id), "quantity": 1}]
        async with (
            aiohttp.ClientSession(headers=bearer("beta")) as http,
            http.get(f"{worker.base}/api/v1/sagas/{sid}") as resp,
        ):
            assert resp.status == 404
    listed = await graphql(
        shop.workers[1], "{ sagas(first: 100, status: COMPLETED) { nodes { id } } }"
    )
    assert sid in [n["id"] for n in listed["data"]["sagas"]["nodes"]]


async def test_orders_racing_for_the_last_units_never_oversell(shop: Shop) -> None:
    admin = shop.admin
    product = await new_product(admin, 5)
    customers = [await new_customer(admin) for _ in range(3)]
    await _ready(shop, customers[0], product.id)
    for customer in customers[1:]:
        await in_catalog(shop.workers[0], "customer", customer)
    orders = [place(shop.workers[n % 2], customers[n % 3], [(product.id, 1)]) for n in range(12)]
    started = await asyncio.gather(*orders)
    ids = [answer["data"]["placeOrder"]["id"] for answer in started]
    sagas = [await finished(shop.workers, sid) for sid in ids]
    completed = {s["id"] for s in sagas if s["status"] == "COMPLETED"}
    assert len(completed) == 5, [(s["status"], s["error"]) for s in sagas]
    assert all(s["status"] == "COMPENSATED" for s in sagas if s["id"] not in completed)
    assert await stock_of(admin, product.id) == 0
    rows = await rows_of(admin, "reservations", {"product": {"_eq": product.id}})
    assert {r["saga"] for r in rows if r["status"] == "held"} == completed
    assert all(r["status"] == "held" for r in rows)  # a refused order reserves nothing


@pytest.mark.parametrize("outage", ["shorter than the deadline", "past the deadline"])
async def test_directus_stopped_mid_saga(shop: Shop, seeded: DirectusHandle, outage: str) -> None:
    admin = shop.admin
    customer = await new_customer(admin)
    product = await new_product(admin, 3)
    await _ready(shop, customer, product.id)
    # Stopped first, so the saga surely meets it: its first step reads the catalog only,
    # the second (reserve_stock) is the first to find Directus gone.
    await seeded.service.stop()
    try:
        answer = await place(shop.workers[0], customer, [(product.id, 2)])
        sid = answer["data"]["placeOrder"]["id"]
        # The shop's sagas have a 30 s deadline.
        await asyncio.sleep(4 if outage == "shorter than the deadline" else 35)
    finally:
        await seeded.service.start()
    saga = await finished(shop.workers, sid, timeout=180)
    failures = [h for h in saga["history"] if h["event"] == "STEP_FAILED"]
    if outage == "shorter than the deadline":
        assert saga["status"] == "COMPLETED", (saga["error"], saga["history"])
        assert await stock_of(admin, product.id) == 1
        return
    assert failures, saga["history"]  # it retried while Directus was away
    assert saga["status"] == "COMPENSATED", (saga["error"], saga["history"])
    assert "deadline" in saga["error"]
    assert await stock_of(admin, product.id) == 3
    rows = await rows_of(admin, "reservations", {"saga": {"_eq": sid}})
    assert all(r["status"] == "released" for r in rows)
    invoices = await rows_of(admin, "invoices", {"saga_key": {"_eq": sid}})
    assert all(i["status"] == "cancelled" for i in invoices)


async def test_every_transition_is_an_avro_event_in_the_registry(
    shop: Shop, registry_url: str
) -> None:
    admin = shop.admin
    customer = await new_customer(admin)
    product = await new_product(admin, 2)
    await _ready(shop, customer, product.id)
    sid = (await place(shop.workers[1], customer, [(product.id, 1)]))["data"]["placeOrder"]["id"]
    saga = await finished(shop.workers, sid)
    codec = AvroEventCodec(
        RegistryClient(registry_url), f"{SAGA_CHANGED_TOPIC}-value", SAGA_CHANGED_SCHEMA
    )
    bootstrap = shop.workers[0].env["MESH_BROKER_URL"].removeprefix("kafka://")
    consumer = AIOKafkaConsumer(
        SAGA_CHANGED_TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    events: dict[int, dict[str, object]] = {}
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(events) < len(saga["history"]):
            assert asyncio.get_running_loop().time() < deadline, (events, saga["history"])
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    if record.key == sid.encode():
                        event = codec.loads(record.value)
                        events[event["sequence"]] = event  # a resumed saga may repeat one
    finally:
        await consumer.stop()
    assert [(e["event"], e["step"]) for _, e in sorted(events.items())] == [
        (h["event"], h["step"]) for h in saga["history"]
    ]
    assert {e["saga_type"] for e in events.values()} == {"place_order"}
    assert {e["tenant"] for e in events.values()} == {"default"}
    assert events[max(events)]["status"] == "COMPLETED"
