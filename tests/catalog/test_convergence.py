"""Crash convergence: a worker killed mid-stream and restarted loses nothing, leaves nothing stale.

Three ``mesh worker`` processes share 6 partitions per topic. A seeded random stream of
creates, updates, deletes and re-pointed invoices/items is produced while one worker is
killed with SIGKILL and restarted. Afterwards, on every worker, every entity answered
through the API (routed to its owner) is at the last version produced, and every reverse
relation lists exactly the live children that point at its parent: in REST and in GraphQL,
both cached and ``Cache-Control: no-cache``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio

from mesh.domain import DomainConfig
from mesh.sources.events import Op
from tests.support.auth import bearer
from tests.support.fleet import Fleet, customer, entity, invoice, invoice_item, open_fleet, product
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker

APP_ID = "catalog-convergence"
PARTITIONS = 6
"""Two per worker: a restarted worker is given partitions again (Faust balances to at most
ceil(partitions / workers) each, which 4 over 3 meets with one worker empty)."""
EVENTS = 3000
CUSTOMERS, PRODUCTS, INVOICES, ITEMS = 12, 8, 40, 80


@pytest_asyncio.fixture(params=["local-cache", "redis"])
async def fleet(
    sample_domain: DomainConfig,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
    redis_url: str,
) -> AsyncIterator[Fleet]:
    """The fleet with its in-memory response caches, and once more with Redis shared by
    the workers as well (the crash must not leave a stale answer in either)."""
    root = tmp_path_factory.mktemp("catalog-convergence")
    env = {"MESH_REDIS_URL": redis_url} if request.param == "redis" else {}
    async with open_fleet(
        sample_domain, root, f"{APP_ID}-{request.param}", PARTITIONS,
        ["conv-a", "conv-b", "conv-c"], env,
    ) as fleet:  # fmt: skip
        yield fleet


@dataclass
class Model:
    """What the events say the world is: the live rows and where they point."""

    rng: random.Random
    position: int = 0
    invoices: dict[int, int] = field(default_factory=dict)
    """Live invoice id → customer id."""
    items: dict[int, int] = field(default_factory=dict)
    """Live item id → invoice id."""

    def next_position(self) -> int:
        self.position += 1
        return self.position

    def expected_relations(self) -> dict[tuple[str, int, str], set[str]]:
        """(parent type, parent id, relation) → ids of the live children."""
        expected: dict[tuple[str, int, str], set[str]] = {}
        for c in range(1, CUSTOMERS + 1):
            expected[("customer", c, "invoices")] = set()
        for i, c in self.invoices.items():
            expected[("customer", c, "invoices")].add(str(i))
        for i in self.invoices:
            expected[("invoice", i, "items")] = set()
        for item, i in self.items.items():
            if i in self.invoices:
                expected[("invoice", i, "items")].add(str(item))
        return expected


async def seed(fleet: Fleet, model: Model) -> None:
    """Customers and products that every later event may point at."""
    for c in range(1, CUSTOMERS + 1):
        await fleet.send("customer", c, model.next_position(), customer(f"C{c}"), Op.CREATE)
    for p in range(1, PRODUCTS + 1):
        await fleet.send("product", p, model.next_position(), product(f"p{p}", "1.00"), Op.CREATE)


async def random_event(fleet: Fleet, model: Model) -> None:
    """One random change: mostly invoices and items, created, re-pointed or deleted."""
    rng = model.rng
    pos = model.next_position()
    kind = rng.random()
    if kind < 0.1:
        c = rng.randint(1, CUSTOMERS)
        await fleet.send("customer", c, pos, customer(f"C{c}v{pos}"))
    elif kind < 0.5:
        i = rng.randint(1, INVOICES)
        if i in model.invoices and rng.random() < 0.25:
            del model.invoices[i]
            await fleet.send("invoice", i, pos, None)
            return
        c = rng.randint(1, CUSTOMERS)
        op = Op.UPDATE if i in model.invoices else Op.CREATE
        model.invoices[i] = c
        await fleet.send("invoice", i, pos, invoice(f"INV-{i}-{pos}", c), op)
    else:
        item = rng.randint(1, ITEMS)
        if item in model.items and rng.random() < 0.25:
            del model.items[item]
            await fleet.send("invoice_item", item, pos, None)
            return
        i = rng.randint(1, INVOICES)
        op = Op.UPDATE if item in model.items else Op.CREATE
        model.items[item] = i
        await fleet.send(
            "invoice_item", item, pos, invoice_item(i, rng.randint(1, PRODUCTS), pos % 9 + 1), op
        )


RELATION_QUERIES = {
    ("customer", "invoices"): "query R($id: ID!) { customer(id: $id) { invoices { id } } }",
    ("invoice", "items"): "query R($id: ID!) { invoice(id: $id) { items { id } } }",
}


async def graphql_members(
    worker: MeshWorker, parent: str, parent_id: int, relation: str, *, no_cache: bool
) -> set[str] | str:
    """The ids GraphQL lists in ``parent.relation``, or the error it gave."""
    headers = {"Cache-Control": "no-cache"} if no_cache else {}
    query = {"query": RELATION_QUERIES[(parent, relation)], "variables": {"id": str(parent_id)}}
    try:
        async with (
            aiohttp.ClientSession(
                headers=bearer(), timeout=aiohttp.ClientTimeout(total=15)
            ) as http,
            http.post(f"{worker.base}/graphql", json=query, headers=headers) as resp,
        ):
            answer = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return repr(exc)
    if resp.status != 200 or answer.get("errors") or answer["data"][parent] is None:
        return f"HTTP {resp.status}: {answer}"
    return {m["id"] for m in answer["data"][parent][relation]}


async def graphql_differences(model: Model, reader: MeshWorker) -> list[str]:
    """Where GraphQL on ``reader``, cached and not, disagrees with the model's relations
    (of every customer and every live invoice)."""
    wrong: list[str] = []
    for (parent, parent_id, relation), children in model.expected_relations().items():
        for no_cache in (False, True):
            got = await graphql_members(reader, parent, parent_id, relation, no_cache=no_cache)
            if got != children:
                how = "no-cache" if no_cache else "cached"
                wrong.append(f"GraphQL ({how}) {parent} {parent_id}.{relation}: "
                             f"want {sorted(children)}, got {got}")  # fmt: skip
    return wrong


async def converged(fleet: Fleet, model: Model, reader: MeshWorker) -> list[str]:
    """Every difference between the API and the model (empty once converged)."""
    wrong: list[str] = []
    for (entity_type, entity_id), (version, deleted) in sorted(fleet.latest.items()):
        got = await reader.get(entity(entity_type, entity_id))
        if got.status != 200 or (got.body["version"], got.body["deleted"]) != (version, deleted):
            state = got.body if got.status != 200 else (got.body["version"], got.body["deleted"])
            wrong.append(f"{entity_type} {entity_id}: want {(version, deleted)}, got {state}")
    for (parent, parent_id, relation), children in model.expected_relations().items():
        got = await reader.get(entity(parent, parent_id) + "/relations")
        if got.status != 200:
            wrong.append(f"{parent} {parent_id}/relations: {got.status} {got.body}")
            continue
        ids = {m["id"] for m in got.body["reverse"][relation]["members"]}
        if ids != children:
            wrong.append(f"{parent} {parent_id}.{relation}: want {sorted(children)}, got {ids}")
    return wrong + await graphql_differences(model, reader)


@pytest.mark.parametrize("seed_value", [1, 2])
async def test_a_worker_killed_mid_stream_converges_after_restart(
    fleet: Fleet, seed_value: int
) -> None:
    a, b, c = fleet.workers
    model = Model(random.Random(seed_value))
    await seed(fleet, model)
    for n in range(EVENTS):
        await random_event(fleet, model)
        if n == EVENTS // 3:
            assert b.proc is not None
            await b.proc.kill()
        if n == EVENTS // 2:
            await b.start()
    await fleet.wait_stable()

    wrong: list[str] = []

    async def check() -> bool:
        wrong[:] = await converged(fleet, model, a)
        return not wrong

    await wait_until(check, timeout=90, what=lambda: f"{len(wrong)} differences: {wrong[:10]}")
    # Every worker owns keys again and answers the same.
    for worker in (b, c):
        assert await converged(fleet, model, worker) == []
    served = {(await a.get(entity("invoice", i))).worker for i in range(1, INVOICES + 1)}
    assert served == {"conv-a", "conv-b", "conv-c"}
