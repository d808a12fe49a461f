"""Planned execution on real workers: the same answers, byte for byte, and the same batches
as graphql-core's executor, for the catalog's own schema.

Its own Tansu broker and schema registry and two ``python -m mesh worker`` processes (app
id ``graphql-plan``, 4 partitions per topic): ``plan`` executes planned queries through
:mod:`mesh.graphql.plan`, ``general`` runs with ``MESH_GRAPHQL_PLAN=false`` (graphql-core
executes everything), both over the same entities, spread over both workers so every
answer reads from the other one. Every request carries ``Cache-Control: no-cache``: the
answers are executed, never served from the response cache.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
import requests
from graphql import GraphQLSchema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.domain import DomainConfig
from mesh.graphql import build_schema
from mesh.sources.events import Op
from tests.graphql.query_strategies import queries
from tests.support.auth import SCOPES, TENANT, bearer
from tests.support.fleet import TIMEOUT, Fleet, customer, invoice, invoice_item, open_fleet, product
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker

APP_ID = "graphql-plan"
PARTITIONS = 4
PLAN, GENERAL = "plan", "general"
EXECUTIONS = "dictamesh_graphql_executions_total"
LISTS = re.compile(r"\b(customers|invoices\(|products\(|invoiceItems\()")
"""A list root field in a query (``invoices`` and ``invoiceItems`` without arguments are
relations of an entity)."""
INVOICES, ITEMS, PRODUCTS = 20, 5, 10
NESTED = """{ customer(id: "1") { id name email invoices { id number status
    items { quantity product { sku name price } } } } }"""
NESTED_KEYS = 1 + 1 + INVOICES + INVOICES + INVOICES * ITEMS + PRODUCTS + 1
"""The nested query's keys: the customer, its invoice index, the invoices, their item
indexes, the items and the products they name (one of them deleted)."""
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=list(HealthCheck),
)
UNPLANNED = [
    "{ __schema { queryType { name } } }",
    '{ __type(name: "Customer") { fields { name } } }',
    "{ _service { sdl } }",
    '{ _entities(representations: [{__typename: "Customer", id: "1"}]) '
    "{ ... on Customer { name } } }",
    'query A { customer(id: "1") { id } } query B { product(id: "1") { id } }',
]
"""Requests no plan covers (introspection, federation, two operations and no name to choose
one; an unknown operation name below): graphql-core answers them on every worker."""


@pytest_asyncio.fixture(scope="module")
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    """The two workers over customers with invoices, items and products, including deleted
    and dangling ones and another tenant's entities with the same ids."""
    root = tmp_path_factory.mktemp("graphql-plan")
    general = {GENERAL: {"MESH_GRAPHQL_PLAN": "false"}}
    async with open_fleet(
        sample_domain, root, APP_ID, PARTITIONS, [PLAN, GENERAL], worker_env=general
    ) as fleet:
        position = 0

        async def send(entity_type: str, entity_id: int, after: Any, **kw: Any) -> None:
            nonlocal position
            position += 1
            await fleet.send(entity_type, entity_id, position, after, Op.CREATE, **kw)

        for pid in range(1, PRODUCTS + 2):
            await send("product", pid, product(f"p{pid}", f"{pid}.50"))
        await send("product", PRODUCTS + 1, None)  # deleted, still named by an item
        for cid, name in enumerate(["Ada", "Bob", "Cy", "Gone"], start=1):
            await send("customer", cid, customer(name, "active" if cid != 2 else "paused"))
        await send("customer", 4, None)
        for i in range(INVOICES):
            await send("invoice", 100 + i, invoice(f"INV-{i}", 1))
            for n in range(ITEMS):
                pid = PRODUCTS + 1 if (i, n) == (0, 0) else (i + n) % PRODUCTS + 1
                await send("invoice_item", (100 + i) * 10 + n, invoice_item(100 + i, pid, n + 1))
        await send("invoice", 120, invoice("INV-deleted", 1))
        await send("invoice", 120, None)
        await send("invoice", 130, invoice("INV-nobody", None))
        await send("invoice", 131, invoice("INV-gone", 4))
        await send("invoice", 132, invoice("INV-bob", 2, "99.99"))
        # Another tenant's entities under the same ids.
        await send("customer", 1, customer("Beta Ada"), tenant="beta")
        await send("product", 1, product("beta-p1", "7.00"), tenant="beta")

        async def folded() -> bool:
            for worker in fleet.workers:
                _, _, body = await asyncio.to_thread(ask, worker, NESTED)
                invoices = ((body.get("data") or {}).get("customer") or {}).get("invoices")
                items = [item for inv in invoices or [] for item in inv["items"]]
                products = [item["product"] for item in items if item["product"]]
                if len(invoices or []) != INVOICES or len(products) != INVOICES * ITEMS - 1:
                    return False
            return True

        await wait_until(folded, timeout=TIMEOUT, what="the entities on both workers")
        yield fleet


@dataclass
class Answer:
    status: int
    raw: bytes
    body: Any


def ask(
    worker: MeshWorker,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    tenant: str = TENANT,
    scopes: tuple[str, ...] = SCOPES,
    debug: bool = False,
    operation: str | None = None,
) -> tuple[int, bytes, Any]:
    """``POST /graphql`` executed (``no-cache``), blocking: ``(status, raw body, body)``."""
    headers = {**bearer(tenant, scopes), "Cache-Control": "no-cache"}
    if debug:
        headers["X-Mesh-Debug"] = "batches"
    resp = requests.post(
        f"{worker.base}/graphql",
        data=json.dumps({"query": query, "variables": variables, "operationName": operation}),
        headers={**headers, "Content-Type": "application/json"},
        timeout=30,
    )
    return resp.status_code, resp.content, resp.json()


def rounds(body: Any) -> dict[int, int]:
    """Keys read per round (the batches of one round summed over their owners)."""
    keys: Counter[int] = Counter()
    for batch in body.get("extensions", {}).get("batches", []):  # none: it did not validate
        keys[batch["round"]] += batch["keys"]
    return dict(keys)


def workers(fleet: Fleet) -> tuple[MeshWorker, MeshWorker]:
    by_name = {w.name: w for w in fleet.workers}
    return by_name[PLAN], by_name[GENERAL]


def same_answers(fleet: Fleet, query: str, variables: dict[str, Any] | None = None,
                 **who: Any) -> Any:  # fmt: skip
    """Ask both workers (blocking): the same status and bytes, and the same keys read in
    each round; the decoded answer."""
    plan, general = workers(fleet)
    planned, generally = ask(plan, query, variables, **who), ask(general, query, variables, **who)
    assert planned[:2] == generally[:2], (query, variables, planned[2], generally[2])
    if planned[0] != 200 or planned[2]["data"] is None:
        # A null answer is returned while reads its other fields asked for may go on:
        # which of them the batches show depends on timing, under either executor.
        return planned[2]
    by_plan = rounds(ask(plan, query, variables, debug=True, **who)[2])
    by_general = rounds(ask(general, query, variables, debug=True, **who)[2])
    if not LISTS.search(query):
        assert by_plan == by_general, (query, variables, by_plan, by_general)
    else:
        # A page is a scan of every worker: under graphql-core the reads its entities ask
        # for join whichever batch is being collected when the scan answers. The planned
        # executor waits for the round's scans and reads them with the round's other
        # fields: the same keys, one batch per level and owner, never more rounds.
        assert sum(by_plan.values()) == sum(by_general.values()), (query, by_plan, by_general)
        assert len(by_plan) <= len(by_general), (query, variables, by_plan, by_general)
    return planned[2]


async def executions(worker: MeshWorker) -> dict[str, float]:
    """The worker's executions so far, by executor."""
    return {e: await worker.metric(EXECUTIONS, executor=e) for e in ("plan", "general")}


async def test_the_nested_query_is_planned_and_answers_as_graphql_core(fleet: Fleet) -> None:
    plan, general = workers(fleet)
    before = await executions(plan), await executions(general)
    for scopes in (SCOPES, ()):  # with the field policy's scope and without
        body = await asyncio.to_thread(same_answers, fleet, NESTED, scopes=scopes)
        assert len(body["data"]["customer"]["invoices"]) == INVOICES
        withheld = [e["message"] for e in body.get("errors", [])]
        assert withheld == ([] if scopes else ["reading 'email' requires the scope pii:read"])
    answer = (await asyncio.to_thread(ask, plan, NESTED, debug=True))[2]
    assert len(rounds(answer)) == 6, answer["extensions"]
    assert sum(rounds(answer).values()) == NESTED_KEYS
    after = await executions(plan), await executions(general)
    # Four executions each: two answers compared, then with the batches shown (the last
    # one on the plan worker only).
    assert after[0]["plan"] - before[0]["plan"] == 5
    assert after[0]["general"] == before[0]["general"]
    assert after[1]["general"] - before[1]["general"] == 4
    assert after[1]["plan"] == 0


async def test_what_no_plan_covers_is_answered_by_graphql_core(fleet: Fleet) -> None:
    plan, _ = workers(fleet)
    before = await executions(plan)
    bodies = [await asyncio.to_thread(same_answers, fleet, query) for query in UNPLANNED]
    unknown = await asyncio.to_thread(same_answers, fleet, UNPLANNED[-1], operation="C")
    assert unknown["errors"][0]["message"] == "Unknown operation named 'C'."
    chosen = await asyncio.to_thread(same_answers, fleet, UNPLANNED[-1], operation="B")
    assert chosen["data"] == {"product": {"id": "1"}}
    after = await executions(plan)
    # Each compared as is, then, when it answered data, with the batches shown; only the
    # chosen operation planned.
    asked = sum(1 if body["data"] is None else 2 for body in [*bodies, unknown])
    assert after["general"] - before["general"] == asked
    assert after["plan"] - before["plan"] == 2


async def test_errors_nulls_policies_and_tenants_answer_alike(fleet: Fleet) -> None:
    cases: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = [
        ('{ customer(id: "4") { id } product(id: "abc") { id } invoice(id: "9") { id } }',
         None, {}),
        ('{ invoice(id: "130") { customer { name } } b: invoice(id: "131") { customer { id } } }',
         None, {}),
        ('{ invoiceItem(id: "1000") { product { sku } } }', None, {}),
        ("query($id: ID!) { customer(id: $id) { name ...E } } "
         "fragment E on Customer { email e: email invoices { number } }",
         {"id": "2"}, {"scopes": ()}),
        ('{ customer(id: "1") { name email invoices { number } } }', None, {"tenant": "beta"}),
        ('{ product(id: "1") { sku invoiceItems { id } } }', None, {"tenant": "beta"}),
        ('{ customers(first: 1000) { nodes { id } } customer(id: "1") { id } }', None, {}),
        ('{ customers(after: "nope") { nodes { id } } }', None, {}),
        ('{ customers(filter: {email: "ada@example.com"}) { nodes { id } } }', None,
         {"scopes": ()}),
        ('{ customers(first: 2, filter: {status: "active"}) { edges { cursor node { name } } '
         "pageInfo { hasNextPage endCursor } } }", None, {}),
        ('query($id: ID!) { customer(id: $id) { id } }', {"id": 7}, {}),
        ("query($id: ID!) { customer(id: $id) { id } }", {}, {}),
        ('{ invoice(id: "100") { meta { urn version deleted op firstSeen lastChanged '
         "source { system instance collection position timestamp } schema { subject id version } "
         "} customer { meta { urn } } } }", None, {}),
    ]  # fmt: skip
    for query, variables, who in cases:
        await asyncio.to_thread(same_answers, fleet, query, variables, **who)


def _roots() -> dict[str, st.SearchStrategy[str]]:
    def by_id(*ids: str) -> st.SearchStrategy[str]:
        return st.sampled_from(ids).map(lambda i: f'(id: "{i}")')

    return {
        "customer": by_id("1", "2", "3", "4", "999", "abc", "007"),
        "invoice": by_id("100", "101", "120", "130", "131", "132", "9"),
        "invoiceItem": by_id("1000", "1001", "1190", "5"),
        "product": by_id("1", "2", str(PRODUCTS + 1), "x"),
        "reservation": by_id("1"),
        "customers": st.sampled_from(
            ["", "(first: 2)", '(first: 3, filter: {status: "active"})', "(first: 1000)"]
        ),
        "invoices": st.sampled_from(['(first: 3, filter: {customer: "1"})', "(first: 2)"]),
        "products": st.just("(first: 3)"),
    }


async def test_generated_queries_answer_alike(fleet: Fleet, sample_domain: DomainConfig) -> None:
    plan, general = workers(fleet)
    schema: GraphQLSchema = build_schema(sample_domain).graphql_schema
    before = await executions(plan)
    who = st.sampled_from([{}, {"scopes": ()}, {"tenant": "beta"}])
    seen: Counter[str] = Counter()

    @FUZZ
    @given(query=queries(schema, _roots(), depth=4), caller=who)
    def fuzz(query: tuple[str, dict[str, Any]], caller: dict[str, Any]) -> None:
        body = same_answers(fleet, *query, **caller)
        seen["errors" if body.get("errors") else "data"] += 1

    await asyncio.to_thread(fuzz)
    after = await executions(plan)
    # Both kinds of answers happened, and most were planned (the others did not validate).
    assert seen["data"] > 20, seen
    assert seen["errors"] > 20, seen
    assert after["plan"] - before["plan"] > FUZZ.max_examples, (seen, before, after)
    assert after["general"] == before["general"]
    assert (await executions(general))["plan"] == 0
