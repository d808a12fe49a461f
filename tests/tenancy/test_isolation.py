"""Tenant isolation, pairwise, over every read path: no answer for one tenant holds another's.

Two Directus instances, the sample domain's two tenants (``default`` and ``beta``), each
seeded with the same ids and other values (tests/fixtures/directus.py), followed by one
fleet: two workers sharing Redis, so a read is served locally, from the other worker, from
Redis, or from a response cache. For each ordered pair (reader, other) and each worker, a
token of the reader's tenant reads by id (nested down to products), pages through lists
(with a filter, and with the *other* tenant's cursor), resolves federation
``_entities``, reads REST entities, relations and type counts — once with caches cold, then
warm (the other tenant having just asked the same questions) and once uncached. Every
answer must equal the reader's own Directus state, and carry no value found only in the
other tenant's (a "leak"; counted over every answer, and reported).

``MESH_TENANCY_LONG=1`` (the soak command's ``tenancy`` scenario) runs the matrix on more
fleet shapes: one worker, and two without Redis.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from mesh.domain import DomainConfig
from tests.fixtures.directus import ADMIN_EMAIL, ADMIN_PASSWORD, DirectusHandle
from tests.support.auth import bearer
from tests.support.directus_admin import DirectusAdmin
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker, start_following_fleet, wait_for_owner

pytestmark = pytest.mark.directus

TENANTS = ("default", "beta")
PARTITIONS = 4
PAGE = 7
NESTED_PER_QUERY = 10
SHAPES = [("two workers, Redis", 2, True)]
if os.environ.get("MESH_TENANCY_LONG") == "1":
    SHAPES += [("one worker", 1, False), ("two workers, no Redis", 2, False)]


@dataclass
class TenantData:
    """One tenant's rows as its Directus holds them, by collection and id."""

    tenant: str
    rows: dict[str, dict[int, dict[str, Any]]]

    def strings(self) -> set[str]:
        """Every string value of the tenant's rows."""
        return {
            v for items in self.rows.values() for row in items.values()
            for v in row.values() if isinstance(v, str)
        }  # fmt: skip

    def customer(self, cid: int) -> dict[str, Any]:
        """``customer(id:)`` of :data:`NESTED` as this tenant must see it."""
        c = self.rows["customers"][cid]
        invoices = sorted(i for i, row in self.rows["invoices"].items() if row["customer"] == cid)
        return {
            "id": str(cid), "name": c["name"], "email": c["email"], "status": c["status"],
            "invoices": [self._invoice(i) for i in invoices],
        }  # fmt: skip

    def _invoice(self, iid: int) -> dict[str, Any]:
        row = self.rows["invoices"][iid]
        items = sorted(i for i, r in self.rows["invoice_items"].items() if r["invoice"] == iid)
        return {"id": str(iid), "number": row["number"], "items": [self._item(i) for i in items]}

    def _item(self, item_id: int) -> dict[str, Any]:
        row = self.rows["invoice_items"][item_id]
        product = row["product"]
        shown = None
        if product is not None:
            p = self.rows["products"][product]
            shown = {"id": str(product), "sku": p["sku"], "name": p["name"]}
        return {"id": str(item_id), "quantity": row["quantity"], "product": shown}


NESTED = """c{id}: customer(id: "{id}") {{ id name email status
  invoices {{ id number items {{ id quantity product {{ id sku name }} }} }} }}"""


def _nested(ids: list[int]) -> str:
    return "{ " + "\n".join(NESTED.format(id=i) for i in ids) + " }"


ENTITIES = """query($reps: [_Any!]!) { _entities(representations: $reps) {
  ... on Customer { id name email } ... on Product { id sku name } } }"""

LIST = f"""query($after: String, $filter: CustomerFilter) {{
  customers(first: {PAGE}, after: $after, filter: $filter) {{
    nodes {{ id name status }} pageInfo {{ hasNextPage endCursor }} }} }}"""


@dataclass
class Matrix:
    """The answers read and the leaks found."""

    data: dict[str, TenantData]
    answers: int = 0
    leaks: list[str] = field(default_factory=list)

    def check(self, reader: str, other: str, what: str, answer: Any) -> None:
        """Count ``answer`` and any value in it that only ``other``'s data holds."""
        self.answers += 1
        foreign = self.data[other].strings() - self.data[reader].strings()
        for value in _strings(answer):
            if value in foreign or f":{other}:" in value:
                self.leaks.append(f"{reader} read {value!r} of {other} via {what}")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@dataclass
class Tenancy:
    workers: list[MeshWorker]
    data: dict[str, TenantData]
    shape: str


async def _tenant_data(handle: DirectusHandle, tenant: str, domain: DomainConfig) -> TenantData:
    collections = [e.collection for e in domain.entities.values()]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        admin = await DirectusAdmin.login(
            http, handle.url, ADMIN_EMAIL, ADMIN_PASSWORD, collections
        )
        rows = {c: {int(r["id"]): r for r in await admin.items(c)} for c in collections}
    return TenantData(tenant, rows)


@pytest_asyncio.fixture(scope="module", params=SHAPES, ids=[s[0] for s in SHAPES])
async def tenancy(
    request: pytest.FixtureRequest,
    seeded: DirectusHandle,
    seeded_beta: DirectusHandle,
    sample_domain: DomainConfig,
    registry_url: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Tenancy]:
    """Both tenants' Directus followed by a fleet of the shape asked, caught up."""
    shape, size, redis = request.param
    root = tmp_path_factory.mktemp("tenancy")
    env = {
        "MESH_DIRECTUS_BETA_ENABLED": "true",
        "MESH_DIRECTUS_BETA_URL": seeded_beta.url,
        "MESH_DIRECTUS_BETA_TOKEN": seeded_beta.service_token,
        "MESH_DIRECTUS_BETA_WRITE_TOKEN": seeded_beta.saga_token,
        **({"MESH_REDIS_URL": redis_url} if redis else {}),
    }
    app_id = f"tenancy-{size}-{'redis' if redis else 'local'}"
    names = [f"tn-{n}" for n in "ab"[:size]]
    data = {
        "default": await _tenant_data(seeded, "default", sample_domain),
        "beta": await _tenant_data(seeded_beta, "beta", sample_domain),
    }
    async with contextlib.AsyncExitStack() as cleanup:
        workers = await start_following_fleet(
            cleanup, app_id=app_id, root=root, names=names, directus=seeded,
            registry_url=registry_url, partitions=PARTITIONS, env=env,
        )  # fmt: skip
        await wait_for_owner(workers, source="directus_beta")
        for tenant in TENANTS:
            expected = {t: len(data[tenant].rows[sample_domain.entities[t].collection])
                        for t in sample_domain.entities}  # fmt: skip

            async def caught_up(tenant: str = tenant, expected: Any = expected) -> bool:
                body = await _rest(workers[0], tenant, "/api/v1/catalog/types")
                counts = {t["name"]: t["counts"]["live"] for t in body["types"]}
                return bool(body["counts"]["complete"]) and counts == expected

            await wait_until(caught_up, timeout=120, what=f"the catalog holding {tenant}'s seed")

            async def related(tenant: str = tenant) -> bool:
                # Relation indexes follow their entities through the relations topic.
                mine = data[tenant]
                ids = sorted(mine.rows["customers"])
                for group in range(0, len(ids), NESTED_PER_QUERY):
                    some = ids[group : group + NESTED_PER_QUERY]
                    got = await _graphql(workers[0], tenant, _nested(some), fresh=True)
                    if got != {f"c{i}": mine.customer(i) for i in some}:
                        return False
                return True

            await wait_until(related, timeout=120, what=f"{tenant}'s relation indexes")
        yield Tenancy(workers, data, shape)


async def _graphql(
    worker: MeshWorker,
    tenant: str,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    fresh: bool = False,
) -> Any:
    headers = {**bearer(tenant), **({"Cache-Control": "no-cache"} if fresh else {})}
    body = {"query": query, "variables": variables or {}}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.post(f"{worker.base}/graphql", json=body, headers=headers) as resp,
    ):
        answer = await resp.json()
        assert resp.status == 200, answer
        assert "errors" not in answer, answer
        return answer["data"]


async def _rest(worker: MeshWorker, tenant: str, path: str) -> Any:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.get(worker.base + path, headers=bearer(tenant)) as resp,
    ):
        assert resp.status == 200, (path, resp.status, await resp.text())
        return await resp.json()


async def _read_everything(
    matrix: Matrix, worker: MeshWorker, reader: str, other: str, *, fresh: bool
) -> None:
    """Every read path for ``reader`` on ``worker``, each answer checked (see module)."""
    mine = matrix.data[reader]
    where = f"{worker.name}{' uncached' if fresh else ''}"
    ids = sorted(mine.rows["customers"])
    for group in range(0, len(ids), NESTED_PER_QUERY):  # within the query cost limits
        some = ids[group : group + NESTED_PER_QUERY]
        got = await _graphql(worker, reader, _nested(some), fresh=fresh)
        matrix.check(reader, other, f"nested by id on {where}", got)
        assert got == {f"c{i}": mine.customer(i) for i in some}

    pages, after, cursors = [], None, []
    while True:
        page = (await _graphql(worker, reader, LIST, {"after": after}, fresh=fresh))["customers"]
        matrix.check(reader, other, f"list page on {where}", page)
        pages += page["nodes"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
        cursors.append(after)
    rows = mine.rows["customers"]
    assert pages == [{"id": str(i), "name": rows[i]["name"], "status": rows[i]["status"]}
                     for i in ids]  # fmt: skip
    active = await _graphql(worker, reader, LIST, {"filter": {"status": "active"}}, fresh=fresh)
    matrix.check(reader, other, f"filtered list on {where}", active)
    expected_active = [str(i) for i in ids if rows[i]["status"] == "active"][:PAGE]
    assert [n["id"] for n in active["customers"]["nodes"]] == expected_active

    # The other tenant's cursor is only an id to start after: it pages the reader's data.
    theirs = matrix.data[other]
    other_cursor = (await _graphql(worker, other, LIST, {}))["customers"]["pageInfo"]["endCursor"]
    page = await _graphql(worker, reader, LIST, {"after": other_cursor}, fresh=fresh)
    matrix.check(reader, other, f"list after the other tenant's cursor on {where}", page)
    start = sorted(theirs.rows["customers"])[PAGE - 1]
    assert [n["id"] for n in page["customers"]["nodes"]] == [str(i) for i in ids if i > start][
        :PAGE
    ]

    products = sorted(mine.rows["products"])[:5]
    reps = [{"__typename": "Customer", "id": str(i)} for i in ids[:5]]
    reps += [{"__typename": "Product", "id": str(p)} for p in products]
    got = await _graphql(worker, reader, ENTITIES, {"reps": reps}, fresh=fresh)
    matrix.check(reader, other, f"_entities on {where}", got)
    assert got["_entities"] == [
        {"id": str(i), "name": rows[i]["name"], "email": rows[i]["email"]} for i in ids[:5]
    ] + [
        {"id": str(p), "sku": mine.rows["products"][p]["sku"],
         "name": mine.rows["products"][p]["name"]} for p in products
    ]  # fmt: skip

    for cid in ids[:10]:
        entity = await _rest(worker, reader, f"/api/v1/entities/customer/{cid}")
        matrix.check(reader, other, f"REST entity on {where}", entity)
        assert (entity["tenant"], entity["urn"]) == (
            reader,
            f"urn:dictamesh:{reader}:customer:{cid}",
        )
        assert entity["data"]["name"] == rows[cid]["name"]
        relations = await _rest(worker, reader, f"/api/v1/entities/customer/{cid}/relations")
        matrix.check(reader, other, f"REST relations on {where}", relations)
        members = [m["id"] for m in relations["reverse"]["invoices"]["members"]]
        assert members == [str(i) for i, r in sorted(mine.rows["invoices"].items())
                           if r["customer"] == cid]  # fmt: skip
    types = await _rest(worker, reader, "/api/v1/catalog/types")
    matrix.check(reader, other, f"REST types on {where}", types)
    source = "directus" if reader == "default" else "directus_beta"
    assert {t["name"]: t["source"] for t in types["types"]} == dict.fromkeys(
        ("customer", "product", "invoice", "invoice_item", "reservation"), source
    )


async def test_no_tenant_ever_reads_another_s_data(tenancy: Tenancy) -> None:
    matrix = Matrix(tenancy.data)
    for worker in tenancy.workers:
        # Cold, with both tenants asking the same questions in turn (same query text: a
        # cache keyed without the tenant would hand the second one the first's answer),
        # then warm, then bypassing the caches.
        for fresh in (False, False, True):
            for reader, other in (TENANTS, TENANTS[::-1]):
                await _read_everything(matrix, worker, reader, other, fresh=fresh)
    print(f"\n{tenancy.shape}: {matrix.answers} answers checked, {len(matrix.leaks)} leaks")
    assert matrix.leaks == []
    assert matrix.answers > 100


async def test_the_two_tenants_data_collide_on_ids_and_differ_in_values(tenancy: Tenancy) -> None:
    # What makes the matrix meaningful: every id exists in both, most values differ.
    mine, theirs = tenancy.data["default"], tenancy.data["beta"]
    for collection in mine.rows:
        assert set(mine.rows[collection]) == set(theirs.rows[collection]), collection
    names = [(mine.rows["customers"][i]["name"], theirs.rows["customers"][i]["name"])
             for i in mine.rows["customers"]]  # fmt: skip
    assert sum(a != b for a, b in names) > len(names) // 2
