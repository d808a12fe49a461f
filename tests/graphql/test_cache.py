"""The GraphQL caches end to end: repeated queries are answered from them, and no query
that starts after a change is written answers the value before it.

Three fleets of real workers: two workers sharing a real Redis (``MESH_REDIS_URL``: whole
responses in each worker, cross-worker reads in Redis), two workers without Redis (whole
responses kept valid by the owners' pushes alone) and one worker without Redis. Each
change is made by producing its event; once the owner's REST API shows it, every worker
must answer it at once, with no retry.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from mesh.domain import DomainConfig
from mesh.sources.events import Op
from tests.support.auth import bearer
from tests.support.fleet import (
    TIMEOUT,
    Fleet,
    at_version,
    customer,
    entity,
    eventually,
    invoice,
    invoice_item,
    open_fleet,
    product,
)
from tests.support.waiting import wait_until
from tests.support.workers import Answer, MeshWorker

QUERY = """{ customer(id: "1") { id name invoices { id number
    items { id quantity product { id name } } } } }"""
SAME_READS = """{ customer(id: "1") { name invoices { number
    items { quantity product { name } } } } }"""
"""Another query text reading the same keys: no response hit, but Redis holds its reads."""
VERSION = '{ customer(id: "1") { name meta { version } } }'


@dataclass
class Model:
    """What was produced, and the answer to :data:`QUERY` it implies."""

    fleet: Fleet
    position: int = 100
    customers: dict[int, str] = field(default_factory=dict)
    products: dict[int, str] = field(default_factory=dict)
    invoices: dict[int, tuple[str, int]] = field(default_factory=dict)
    items: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    async def send(self, entity_type: str, entity_id: int, after: Any, op: Op = Op.UPDATE) -> int:
        self.position += 1
        await self.fleet.send(entity_type, entity_id, self.position, after, op)
        return self.position

    def expected(self) -> dict[str, Any]:
        def items(inv: int) -> list[dict[str, Any]]:
            ids = sorted((i for i, (of, _, _) in self.items.items() if of == inv), key=str)
            out = []
            for i in ids:
                _, prod, quantity = self.items[i]
                out.append({"id": str(i), "quantity": quantity,
                            "product": {"id": str(prod), "name": self.products[prod]}})  # fmt: skip
            return out

        ids = sorted((i for i, (_, c) in self.invoices.items() if c == 1), key=str)
        invoices = [{"id": str(i), "number": self.invoices[i][0], "items": items(i)} for i in ids]
        return {"customer": {"id": "1", "name": self.customers[1], "invoices": invoices}}


async def ask(worker: MeshWorker, query: str, headers: dict[str, str] | None = None) -> Any:
    """``POST /graphql`` on ``worker``: the answer's data (errors fail the test)."""
    async with (
        aiohttp.ClientSession(headers=bearer()) as http,
        http.post(f"{worker.base}/graphql", json={"query": query}, headers=headers) as resp,
    ):
        answer = await resp.json()
    assert resp.status == 200, answer
    assert "errors" not in answer, answer
    return answer["data"]


async def hits(fleet: Fleet, cache: str) -> float:
    """Cache hits of ``cache`` summed over the fleet."""
    total = 0.0
    for worker in fleet.workers:
        total += await worker.metric("dictamesh_cache_lookups_total", cache=cache, result="hit")
    return total


@pytest_asyncio.fixture(scope="module", params=["redis", "peers", "memory"])
async def model(
    request: pytest.FixtureRequest,
    sample_domain: DomainConfig,
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
) -> AsyncIterator[Model]:
    """A fleet (two workers with Redis or without, or one) holding customer 1's invoices."""
    root = tmp_path_factory.mktemp(f"cache-{request.param}")
    if request.param == "redis":
        # Its own key prefix in the shared server: runs never see each other's keys.
        app_id, names = f"cache-{secrets.token_hex(4)}", ["cache-a", "cache-b"]
        env = {"MESH_REDIS_URL": redis_url}
    elif request.param == "peers":
        app_id, names, env = "cache-peers", ["cache-c", "cache-d"], {}
    else:
        app_id, names, env = "cache-memory", ["cache-solo"], {}
    async with open_fleet(sample_domain, root, app_id, 4, names, env) as fleet:
        m = Model(fleet)
        for pid in (1, 2, 3):
            m.products[pid] = f"Product {pid}"
            await m.send("product", pid, product(f"p{pid}", "1.00") | {"name": m.products[pid]},
                         Op.CREATE)  # fmt: skip
        for cid, name in ((1, "Ada"), (2, "Bob")):
            m.customers[cid] = name
            await m.send("customer", cid, customer(name), Op.CREATE)
        for inv, lines in ((10, [(100, 1), (101, 2)]), (11, [(110, 3)])):
            m.invoices[inv] = (f"INV-{inv}", 1)
            await m.send("invoice", inv, invoice(f"INV-{inv}", 1), Op.CREATE)
            for item, prod in lines:
                m.items[item] = (inv, prod, 1)
                await m.send("invoice_item", item, invoice_item(inv, prod, 1), Op.CREATE)
        for worker in fleet.workers:
            await _converged(worker, m.expected())
        yield m


async def _converged(worker: MeshWorker, expected: Any) -> None:
    seen: list[Any] = []

    async def same() -> bool:
        async with (
            aiohttp.ClientSession(headers=bearer()) as http,
            http.post(f"{worker.base}/graphql", json={"query": QUERY}) as resp,
        ):
            seen[:] = [await resp.json()]
        return bool(seen[0].get("data") == expected)

    await wait_until(same, timeout=TIMEOUT, what=lambda: f"{expected}, got {seen}")


async def test_repeated_queries_are_answered_from_the_caches(model: Model) -> None:
    fleet = model.fleet
    before = await hits(fleet, "response")
    for worker in fleet.workers:
        first, second = await ask(worker, QUERY), await ask(worker, QUERY)
        assert first == second == model.expected()
    assert await hits(fleet, "response") >= before + len(fleet.workers)
    ratio = await fleet.workers[0].metric("dictamesh_cache_hit_ratio", cache="response")
    assert 0 < ratio <= 1
    if "MESH_REDIS_URL" in fleet.workers[0].env:
        # Every key is another worker's somewhere: a new query text misses the response
        # cache but finds those reads in Redis.
        shared = await hits(fleet, "shared")
        for worker in fleet.workers:
            await ask(worker, SAME_READS)
        assert await hits(fleet, "shared") > shared


async def test_no_cache_requests_are_answered_from_the_tables(model: Model) -> None:
    fleet = model.fleet
    lookups = {
        cache: sum([await w.metric("dictamesh_cache_lookups_total", cache=cache, result=r)
                    for w in fleet.workers for r in ("hit", "miss")])
        for cache in ("response", "shared")
    }  # fmt: skip
    for worker in fleet.workers:
        for _ in range(2):
            assert await ask(worker, QUERY, {"Cache-Control": "no-cache"}) == model.expected()
    for cache, before in lookups.items():
        after = sum([await w.metric("dictamesh_cache_lookups_total", cache=cache, result=r)
                     for w in fleet.workers for r in ("hit", "miss")])  # fmt: skip
        assert after == before, cache


async def _written(fleet: Fleet, entity_type: str, entity_id: int, version: int) -> None:
    await eventually(fleet.workers[0], entity(entity_type, entity_id), at_version(version))


async def _members(fleet: Fleet, path: str, relation: str, ids: list[str]) -> None:
    def shows(answer: Answer) -> bool:
        if answer.status != 200:
            return False
        members = answer.body["reverse"][relation]["members"]
        return sorted(m["id"] for m in members) == sorted(ids)

    await eventually(fleet.workers[0], path + "/relations", shows)


async def test_no_query_after_a_change_is_written_answers_the_old_value(model: Model) -> None:
    fleet, m = model.fleet, model

    async def rename_customer() -> None:
        m.customers[1] += "+"
        await _written(fleet, "customer", 1, await m.send("customer", 1, customer(m.customers[1])))

    async def rename_product() -> None:
        m.products[2] += "+"
        after = product("p2", "1.00") | {"name": m.products[2]}
        await _written(fleet, "product", 2, await m.send("product", 2, after))

    async def renumber_invoice() -> None:
        m.invoices[10] = (m.invoices[10][0] + "+", 1)
        after = invoice(m.invoices[10][0], 1)
        await _written(fleet, "invoice", 10, await m.send("invoice", 10, after))

    async def change_quantity() -> None:
        inv, prod, quantity = m.items[101]
        m.items[101] = (inv, prod, quantity + 1)
        after = invoice_item(inv, prod, quantity + 1)
        await _written(fleet, "invoice_item", 101, await m.send("invoice_item", 101, after))

    async def add_invoice() -> None:
        new = max(m.invoices) + 1
        m.invoices[new] = (f"INV-{new}", 1)
        version = await m.send("invoice", new, invoice(f"INV-{new}", 1))
        await _written(fleet, "invoice", new, version)
        live = [str(i) for i, (_, c) in m.invoices.items() if c == 1]
        await _members(fleet, entity("customer", 1), "invoices", live)

    async def move_invoice() -> None:
        moved = min(i for i, (_, c) in m.invoices.items() if c == 1 and i != 10)
        m.invoices[moved] = (m.invoices[moved][0], 2)
        after = invoice(m.invoices[moved][0], 2)
        await _written(fleet, "invoice", moved, await m.send("invoice", moved, after))
        live = [str(i) for i, (_, c) in m.invoices.items() if c == 1]
        await _members(fleet, entity("customer", 1), "invoices", live)

    async def delete_item() -> None:
        inv = m.items.pop(100)[0]
        await _written(fleet, "invoice_item", 100, await m.send("invoice_item", 100, None))
        live = [str(i) for i, (of, _, _) in m.items.items() if of == inv]
        await _members(fleet, entity("invoice", inv), "items", live)

    changes = [rename_customer, rename_product, renumber_invoice, change_quantity,
               add_invoice, rename_product, move_invoice, delete_item, rename_customer]  # fmt: skip
    for change in changes:
        for worker in fleet.workers:  # the old answer is now cached everywhere
            await ask(worker, QUERY)
            await ask(worker, QUERY)
        await change()
        for worker in fleet.workers:
            assert await ask(worker, QUERY) == m.expected(), (change.__name__, worker.name)


async def test_queries_racing_a_stream_of_changes_never_go_back(model: Model) -> None:
    """Readers on every worker query while a writer renames; a poller notes when the owner
    shows each version. A query must answer at least the version shown before it began."""
    fleet, m = model.fleet, model
    shown: list[tuple[float, int]] = []  # (when the owner showed it, version)
    seen: list[tuple[float, int]] = []  # (when the query started, version answered)
    done = asyncio.Event()

    async def write() -> None:
        for _ in range(30):
            m.customers[1] += "."
            await m.send("customer", 1, customer(m.customers[1]))
            await asyncio.sleep(0.05)
        done.set()

    async def poll() -> None:
        while not done.is_set() or not shown or shown[-1][1] < m.position:
            answer = await fleet.workers[0].get(entity("customer", 1))
            shown.append((time.monotonic(), answer.body["version"]))

    async def read(worker: MeshWorker) -> None:
        while not done.is_set():
            started = time.monotonic()
            data = await ask(worker, VERSION)
            seen.append((started, int(data["customer"]["meta"]["version"])))

    await asyncio.wait_for(
        asyncio.gather(write(), poll(), *(read(w) for w in fleet.workers for _ in range(3))),
        timeout=TIMEOUT,
    )
    assert len(seen) > 20
    assert len({v for _, v in shown}) > 3  # the changes were seen one batch at a time
    for started, version in seen:
        floor = max((v for at, v in shown if at < started), default=0)
        assert version >= floor, (started, version, floor)
    # Once the stream ends, every worker answers the last version.
    for worker in fleet.workers:
        data = await ask(worker, VERSION)
        assert int(data["customer"]["meta"]["version"]) == m.position
