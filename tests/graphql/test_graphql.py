"""``/graphql`` end to end: change events in, nested GraphQL answers out, reads batched.

Its own Tansu broker and schema registry and two ``python -m mesh worker`` processes (app
id ``graphql``, 4 partitions per topic), so the entities of one query live on both workers
and every answer needs reads from the other one. The client is gql 3.5 over aiohttp, an
independent GraphQL client; plain aiohttp checks the HTTP edges.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from gql import Client, gql
from gql.transport.aiohttp import AIOHTTPTransport
from gql.transport.exceptions import TransportQueryError

from mesh.domain import DomainConfig
from mesh.sources.events import Op
from tests.support.auth import bearer
from tests.support.fleet import TIMEOUT, Fleet, customer, invoice, invoice_item, open_fleet, product
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker

APP_ID = "graphql"
PARTITIONS = 4
ISSUE_QUERY = """
{ customer(id: "1") { id name email invoices { id number status
    items { quantity product { sku name price } } } } }
"""
BIG_QUERY = """
query Big($id: ID!) { customer(id: $id) { id invoices { id number
    items { id quantity unitPrice product { id sku price } } } } }
"""


@pytest_asyncio.fixture(scope="module")
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    """Broker, registry, the entity topics and two ready workers of ``graphql``."""
    root = tmp_path_factory.mktemp("graphql")
    async with open_fleet(sample_domain, root, APP_ID, PARTITIONS, ["gql-a", "gql-b"]) as fleet:
        yield fleet


async def run(
    worker: MeshWorker, query: str, variables: dict[str, Any] | None = None, *, debug: bool = False
) -> Any:
    """Execute ``query`` on ``worker`` with gql; the ``ExecutionResult`` (raises on errors)."""
    headers = {**bearer(), **({"X-Mesh-Debug": "batches"} if debug else {})}
    transport = AIOHTTPTransport(url=f"{worker.base}/graphql", headers=headers, timeout=15)
    async with Client(transport=transport) as session:
        return await session.execute(
            gql(query), variable_values=variables, get_execution_result=True
        )


async def converged(worker: MeshWorker, query: str, expected: Any, **kw: Any) -> Any:
    """Run ``query`` until its data equals ``expected`` (events take a moment to fold)."""
    last: list[Any] = []

    async def same() -> bool:
        try:
            last[:] = [await run(worker, query, **kw)]
        except TransportQueryError as exc:
            last[:] = [exc]
            return False
        return bool(last[0].data == expected)

    await wait_until(same, timeout=TIMEOUT, what=lambda: f"{query} to answer {expected}: {last}")
    return last[0]


async def post(worker: MeshWorker, body: bytes, content_type: str = "application/json") -> Any:
    """``POST /graphql`` with a raw body: ``(status, content type, JSON body)``."""
    async with (
        aiohttp.ClientSession(headers=bearer()) as http,
        http.post(
            f"{worker.base}/graphql", data=body, headers={"Content-Type": content_type}
        ) as resp,
    ):
        return resp.status, resp.content_type, json.loads(await resp.read())


async def test_the_issue_query_answers_what_was_produced_on_every_worker(fleet: Fleet) -> None:
    products = {1: ("bolt", "12.50"), 2: ("nut", "0.30"), 3: ("washer", "1.05")}
    for pid, (sku, price) in products.items():
        await fleet.send("product", pid, 100 + pid, product(sku, price), Op.CREATE)
    await fleet.send("customer", 1, 110, customer("Ada"), Op.CREATE)
    lines = {10: [(1, 2), (2, 10)], 11: [(3, 1)], 12: []}
    position = 200
    for inv_id, items in lines.items():
        await fleet.send("invoice", inv_id, position, invoice(f"INV-{inv_id}", 1), Op.CREATE)
        for n, (pid, quantity) in enumerate(items):
            item = invoice_item(inv_id, pid, quantity)
            await fleet.send("invoice_item", inv_id * 10 + n, position + n + 1, item, Op.CREATE)
        position += 10
    # A deleted invoice leaves the customer's list.
    await fleet.send("invoice", 13, 300, invoice("INV-13", 1), Op.CREATE)
    await fleet.send("invoice", 13, 301, None)

    def shown(pid: int) -> dict[str, str]:
        sku, price = products[pid]
        return {"sku": sku, "name": sku.title(), "price": price}

    expected = {
        "customer": {
            "id": "1",
            "name": "Ada",
            "email": "ada@example.com",
            "invoices": [
                {
                    "id": str(inv_id),
                    "number": f"INV-{inv_id}",
                    "status": "open",
                    "items": [{"quantity": q, "product": shown(p)} for p, q in items],
                }
                for inv_id, items in lines.items()
            ],
        }
    }
    for worker in fleet.workers:
        await converged(worker, ISSUE_QUERY, expected)


async def test_forward_relations_and_metadata(fleet: Fleet) -> None:
    a, b = fleet.workers
    await fleet.send("customer", 2, 120, customer("Bob"), Op.CREATE)
    await fleet.send("product", 4, 121, product("gear", "9.99"), Op.CREATE)
    await fleet.send("invoice", 20, 122, invoice("INV-20", 2, "19.98"), Op.CREATE)
    await fleet.send("invoice_item", 200, 123, invoice_item(20, 4, 2), Op.CREATE)
    query = """{ invoiceItem(id: "200") { id quantity unitPrice dateCreated
        product { sku } invoice { number total issuedAt customer { name } }
        meta { urn version deleted op source { system instance collection position }
               schema { subject version } } } }"""
    topic = fleet.domain.topic("invoice_item")
    expected = {
        "invoiceItem": {
            "id": "200",
            "quantity": 2,
            "unitPrice": "2.50",
            "dateCreated": "2026-11-02T09:30:00+00:00",
            "product": {"sku": "gear"},
            "invoice": {
                "number": "INV-20",
                "total": "19.98",
                "issuedAt": "2026-11-02T09:30:00+00:00",
                "customer": {"name": "Bob"},
            },
            "meta": {
                "urn": "urn:dictamesh:default:invoice_item:200",
                "version": 123,
                "deleted": False,
                "op": "CREATE",
                "source": {
                    "system": "directus",
                    "instance": "directus",
                    "collection": "invoice_items",
                    "position": 123,
                },
                "schema": {"subject": f"{topic}-value", "version": 1},
            },
        }
    }
    await converged(a, query, expected)
    await converged(b, query, expected)
    # The reverse side of the same data, from the product.
    await converged(b, '{ product(id: "4") { invoiceItems { id } } }', {
        "product": {"invoiceItems": [{"id": "200"}]}
    })  # fmt: skip


async def test_nested_reads_are_batched_per_owner_and_level(fleet: Fleet) -> None:
    """20 invoices x 5 items = 100 items over both workers: a handful of batches, not 100+."""
    customer_id, products = 3, range(30, 40)
    for pid in products:
        await fleet.send("product", pid, 1000 + pid, product(f"p{pid}", "1.00"), Op.CREATE)
    await fleet.send("customer", customer_id, 1100, customer("Cy"), Op.CREATE)
    invoices: list[dict[str, Any]] = []
    for i in range(20):
        inv_id = 300 + i
        await fleet.send("invoice", inv_id, 2000 + i, invoice(f"B-{i}", customer_id), Op.CREATE)
        items = []
        for n in range(5):
            item_id, pid = inv_id * 10 + n, products[(i + n) % len(products)]
            await fleet.send(
                "invoice_item", item_id, 3000 + item_id, invoice_item(inv_id, pid, n + 1), Op.CREATE
            )
            product_body = {"id": str(pid), "sku": f"p{pid}", "price": "1.00"}
            items.append({"id": str(item_id), "quantity": n + 1, "unitPrice": "2.50",
                          "product": product_body})  # fmt: skip
        invoices.append({"id": str(inv_id), "number": f"B-{i}", "items": items})
    expected = {"customer": {"id": str(customer_id), "invoices": invoices}}
    variables = {"id": str(customer_id)}
    for worker in fleet.workers:
        await converged(worker, BIG_QUERY, expected, variables=variables)
        before = await worker.metric("dictamesh_graphql_batches_total", kind="remote")
        result = await run(worker, BIG_QUERY, variables, debug=True)
        assert result.data == expected
        batches = result.extensions["batches"]
        per_round_owner = Counter((b["round"], b["owner"]) for b in batches)
        # Levels: customer, its invoice index, invoices, their item indexes, items, products.
        assert max(b["round"] for b in batches) <= 6, batches
        assert set(per_round_owner.values()) == {1}, batches
        assert len(batches) <= 12, batches
        kinds = Counter(b["kind"] for b in batches)
        assert kinds["remote"] >= 1, batches  # the data really is on both workers
        assert kinds["local"] >= 1, batches
        assert sum(b["keys"] for b in batches) == 1 + 1 + 20 + 20 + 100 + len(products)
        after = await worker.metric("dictamesh_graphql_batches_total", kind="remote")
        assert after - before == kinds["remote"]


async def test_unknown_deleted_and_invalid_ids_are_clear_errors(fleet: Fleet) -> None:
    a, b = fleet.workers
    await fleet.send("customer", 4, 130, customer("Gone"), Op.CREATE)
    await fleet.send("customer", 4, 131, None)
    cases = {
        '{ customer(id: "999") { id } }': "no customer with id 999",
        '{ customer(id: "4") { id } }': "no customer with id 4",
        '{ customer(id: "abc") { id } }': "invalid customer id 'abc'",
    }
    for query, message in cases.items():
        for worker in (a, b):

            async def refused(w: MeshWorker = worker, q: str = query, m: str = message) -> bool:
                try:
                    await run(w, q)
                except TransportQueryError as exc:
                    errors = exc.errors or []
                    nulled = exc.data == {"customer": None}
                    return nulled and bool(errors) and m in errors[0]["message"]
                return False

            await wait_until(refused, timeout=TIMEOUT, what=f"{query} to fail with {message}")


async def test_http_edges(fleet: Fleet) -> None:
    a, _ = fleet.workers
    async with aiohttp.ClientSession(headers=bearer()) as http:
        async with http.get(f"{a.base}/graphql", headers={"Accept": "text/html"}) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            assert "GraphiQL" in await resp.text()
        params = {"query": '{ customer(id: "1") { name } }'}
        async with http.get(f"{a.base}/graphql", params=params) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            assert await resp.json() == {"data": {"customer": {"name": "Ada"}}}
    assert (await post(a, b"{not json"))[:2] == (400, "application/json")
    status, _, body = await post(a, json.dumps({"variables": {}}).encode())
    assert status == 400
    assert "query" in body["errors"][0]["message"]
    status, _, body = await post(a, json.dumps({"query": "{ customer(id: "}).encode())
    assert status == 200
    assert "Syntax Error" in body["errors"][0]["message"]
    status, _, body = await post(a, json.dumps({"query": "{ nope }"}).encode())
    assert status == 200
    assert "nope" in body["errors"][0]["message"]


async def test_limits_are_enforced_over_http(fleet: Fleet) -> None:
    a, _ = fleet.workers
    deep = '{ customer(id: "1") { invoices { customer { invoices { customer { invoices {'
    deep += " customer { invoices { customer { invoices { id } } } } } } } } } } }"
    status, _, body = await post(a, json.dumps({"query": deep}).encode())
    assert status == 200
    assert body["data"] is None
    assert "depth" in body["errors"][0]["message"]
    aliases = "{ " + " ".join(f'c{i}: customer(id: "1") {{ id }}' for i in range(31)) + " }"
    status, _, body = await post(a, json.dumps({"query": aliases}).encode())
    assert status == 200
    assert "alias" in body["errors"][0]["message"]
    padded = json.dumps({"query": "{ __typename }", "pad": "x" * 70_000}).encode()
    status, _, body = await post(a, padded)
    assert status == 413
    assert "64" in body["errors"][0]["message"] or "65536" in body["errors"][0]["message"]
    # Suggestions are cut: the default hides "Did you mean" hints.
    status, _, body = await post(a, json.dumps({"query": "{ custome(id: 1) { id } }"}).encode())
    assert status == 200
    assert "Did you mean" not in body["errors"][0]["message"]


async def test_lists_page_through_the_whole_fleet_with_filters(fleet: Fleet) -> None:
    """Runs after the tests above: customers 1-3 live, 4 deleted; customer 3 has 20 invoices."""
    a, b = fleet.workers
    live = {"customers": {"nodes": [{"id": "1"}, {"id": "2"}, {"id": "3"}]}}
    await converged(a, '{ customers(filter: {status: "active"}) { nodes { id } } }', live)
    ada = {"customers": {"nodes": [{"id": "1", "name": "Ada"}]}}
    await converged(b, '{ customers(filter: {name: "Ada"}) { nodes { id name } } }', ada)
    cheap = '{ products(filter: {price: "1.0"}, first: 100) { nodes { id } } }'
    result = await run(a, cheap)
    assert [n["id"] for n in result.data["products"]["nodes"]] == [str(p) for p in range(30, 40)]

    query = """query Page($after: String) {
        invoices(first: 7, after: $after, filter: {customer: "3"}) {
            edges { cursor node { id number customer { id } } }
            pageInfo { hasNextPage endCursor } } }"""
    seen: list[str] = []
    after: str | None = None
    pages = 0
    for worker in (a, b, a, b):  # pages of one listing may come from any worker
        page = (await run(worker, query, {"after": after})).data["invoices"]
        pages += 1
        for edge in page["edges"]:
            assert edge["node"]["customer"] == {"id": "3"}
            seen.append(edge["node"]["id"])
        after = page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
    assert pages == 3
    assert seen == [str(300 + i) for i in range(20)]

    with pytest.raises(TransportQueryError, match="invalid cursor"):
        await run(a, '{ invoices(after: "bm9wZQ==") { nodes { id } } }')
    with pytest.raises(TransportQueryError, match="'first' must be between"):
        await run(a, "{ invoices(first: 1000) { nodes { id } } }")
