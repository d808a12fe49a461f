"""The dev stack's Directus as sagas write to it, for real: unique fields refuse a duplicate
(what a saga's idempotency rests on), the sagas' token writes what they need and nothing
else, and the adapters' token still writes nothing.

Runs on the session's seeded Directus; what a test writes there it removes again.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from mesh_tooling.dev.directus import SAGA_EMAIL, SAGA_ROLE, DirectusClient
from mesh_tooling.dev.directus.schema import ensure_schema

from mesh.domain import DomainConfig, parse_domain
from mesh.errors import StackError
from tests.fixtures.directus import ADMIN_EMAIL, ADMIN_PASSWORD, DirectusHandle

pytestmark = [pytest.mark.directus, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest_asyncio.fixture(loop_scope="session")
async def admin(seeded: DirectusHandle, http: aiohttp.ClientSession) -> DirectusClient:
    return await DirectusClient.login(http, seeded.url, ADMIN_EMAIL, ADMIN_PASSWORD)


class Api:
    """Calls with one bearer token: (status, parsed body), whatever the status."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.http, self.url, self.token = http, url, token

    async def __call__(
        self, method: str, path: str, json: Any = None, params: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.request(
            method, self.url + path, json=json, params=params, headers=headers
        ) as resp:
            body = await resp.json(content_type=None) if resp.status != 204 else None
            return resp.status, body


def codes(body: Any) -> list[str]:
    """The error codes of a Directus error body."""
    return [e.get("extensions", {}).get("code") for e in body.get("errors", [])]


def invoice(saga_key: str) -> dict[str, Any]:
    return {"number": f"T-{saga_key}", "status": "draft", "total": "0.00", "saga_key": saga_key}


async def test_the_sample_unique_fields_refuse_a_duplicate(
    seeded: DirectusHandle, admin: DirectusClient, http: aiohttp.ClientSession
) -> None:
    saga = Api(http, seeded.url, seeded.saga_token)
    key = f"saga-{uuid.uuid4().hex[:8]}"
    made: list[tuple[str, int]] = []
    try:
        status, body = await saga("POST", "/items/invoices", invoice(key))
        assert status == 200, body
        made.append(("invoices", body["data"]["id"]))
        # A retried create with the same key: refused, and no second row.
        status, body = await saga("POST", "/items/invoices", invoice(key))
        assert (status, codes(body)) == (400, ["RECORD_NOT_UNIQUE"]), body
        rows = await admin.request(
            "GET", "/items/invoices", params={"filter[saga_key][_eq]": key, "fields": "id"}
        )
        assert len(rows) == 1

        line = {"saga": key, "product": 1, "quantity": 1, "status": "reserving"}
        status, body = await saga("POST", "/items/reservations", {**line, "saga_line": f"{key}:0"})
        assert status == 200, body
        made.append(("reservations", body["data"]["id"]))
        status, body = await saga("POST", "/items/reservations", {**line, "saga_line": f"{key}:0"})
        assert (status, codes(body)) == (400, ["RECORD_NOT_UNIQUE"]), body
        # Nulls never collide: the seeded invoices have no saga key.
        status, body = await saga("POST", "/items/invoices", invoice(key) | {"saga_key": None})
        assert status == 200, body
        made.append(("invoices", body["data"]["id"]))
    finally:
        for collection, item in made:
            await admin.request("DELETE", f"/items/{collection}/{item}")


async def test_the_saga_token_writes_what_sagas_need_and_nothing_else(
    seeded: DirectusHandle, admin: DirectusClient, http: aiohttp.ClientSession
) -> None:
    saga = Api(http, seeded.url, seeded.saga_token)
    key = f"saga-{uuid.uuid4().hex[:8]}"
    product = await admin.request("GET", "/items/products/1")
    made: list[tuple[str, int]] = []
    try:
        status, body = await saga("GET", "/items/customers/1")
        assert status == 200, body
        status, body = await saga(
            "POST",
            "/items/reservations",
            {
                "saga_line": f"{key}:0",
                "saga": key,
                "product": 1,
                "quantity": 2,
                "status": "reserving",
                "stock_expected": product["stock"] - 2,
            },
        )
        assert status == 200, body
        made.append(("reservations", body["data"]["id"]))
        status, body = await saga("PATCH", f"/items/reservations/{made[-1][1]}", {"status": "held"})
        assert (status, body["data"]["status"]) == (200, "held"), body
        status, body = await saga("PATCH", "/items/products/1", {"stock": product["stock"] - 2})
        assert (status, body["data"]["stock"]) == (200, product["stock"] - 2), body

        # Stock only: a price (alone or beside the stock) is people's to change.
        for patch in ({"price": "1.00"}, {"stock": product["stock"], "price": "1.00"}):
            status, body = await saga("PATCH", "/items/products/1", patch)
            assert (status, codes(body)) == (403, ["FORBIDDEN"]), patch
        status, body = await saga("POST", "/items/invoices", invoice(key))
        assert status == 200, body
        made.append(("invoices", body["data"]["id"]))
        status, body = await saga("PATCH", f"/items/invoices/{made[-1][1]}", {"status": "void"})
        assert status == 200, body
        # Nothing is deleted: a compensated order cancels its invoice, releases its stock.
        for collection, item in made:
            status, body = await saga("DELETE", f"/items/{collection}/{item}")
            assert (status, codes(body)) == (403, ["FORBIDDEN"]), collection
        status, body = await saga("POST", "/items/customers", {"name": "x", "status": "active"})
        assert status == 403
        status, body = await saga("GET", "/users")
        assert status == 403
        assert (await admin.request("GET", "/items/products/1"))["price"] == product["price"]
    finally:
        await admin.request("PATCH", "/items/products/1", {"stock": product["stock"]})
        for collection, item in made:
            await admin.request("DELETE", f"/items/{collection}/{item}")


async def test_the_saga_role_is_as_declared(seeded: DirectusHandle, admin: DirectusClient) -> None:
    (role,) = await admin.request(
        "GET", "/roles", params={"filter[name][_eq]": SAGA_ROLE, "fields": "id,admin_access"}
    )
    assert role["admin_access"] is False
    (user,) = await admin.request(
        "GET", "/users", params={"filter[email][_eq]": SAGA_EMAIL, "fields": "role"}
    )
    assert user["role"] == role["id"]
    rows = await admin.request(
        "GET",
        "/permissions",
        params={"filter[role][_eq]": role["id"], "fields": "collection,action,fields"},
    )
    granted = {(r["collection"], r["action"]): r["fields"] for r in rows}
    assert granted == {
        **{(c, "read"): ["*"] for c in ("customers", "products")},
        ("products", "update"): ["stock"],
        **{
            (c, action): ["*"]
            for c in ("reservations", "invoices", "invoice_items")
            for action in ("read", "create", "update")
        },
    }


async def test_the_adapter_token_still_writes_nothing(
    seeded: DirectusHandle, http: aiohttp.ClientSession
) -> None:
    adapter = Api(http, seeded.url, seeded.service_token)
    status, _ = await adapter("GET", "/items/reservations")
    assert status == 200
    line = {"saga_line": "adapter:0", "saga": "adapter", "quantity": 1, "status": "held"}
    status, body = await adapter("POST", "/items/reservations", line)
    assert (status, codes(body)) == (403, ["FORBIDDEN"])
    status, body = await adapter("PATCH", "/items/products/1", {"stock": 0})
    assert (status, codes(body)) == (403, ["FORBIDDEN"])
    status, body = await adapter("DELETE", "/items/invoices/1")
    assert (status, codes(body)) == (403, ["FORBIDDEN"])


def _scratch_domain(collection: str, *, unique: bool) -> DomainConfig:
    return parse_domain(
        {
            "version": 2,
            "tenants": ["t"],
            "sources": [
                {"name": "s", "tenant": "t", "kind": "directus", "url": "x", "token_env": "T"}
            ],
            "entities": {
                "scratch": {
                    "graphql_name": "Scratch",
                    "sources": ["s"],
                    "collection": collection,
                    "fields": {
                        "id": {"type": "integer"},
                        "code": {"type": "string", "nullable": True, "unique": unique},
                    },
                }
            },
        }
    )


async def test_a_field_made_unique_later_gets_its_unique_index(
    seeded: DirectusHandle, admin: DirectusClient
) -> None:
    collection = f"scratch_{uuid.uuid4().hex[:8]}"
    said: list[str] = []
    plain = _scratch_domain(collection, unique=False)
    assert await ensure_schema(admin, plain, plain.entities, said.append) is True
    try:
        await admin.request("POST", f"/items/{collection}", [{"code": "a"}, {"code": "b"}])
        unique = _scratch_domain(collection, unique=True)
        assert await ensure_schema(admin, unique, unique.entities, said.append) is True
        assert said[-1] == f"making field {collection}.code unique"
        field = await admin.request("GET", f"/fields/{collection}/code")
        assert field["schema"]["is_unique"] is True
        with pytest.raises(StackError, match="RECORD_NOT_UNIQUE"):
            await admin.request("POST", f"/items/{collection}", {"code": "a"})
        assert await ensure_schema(admin, unique, unique.entities, said.append) is False
    finally:
        await admin.request("DELETE", f"/collections/{collection}")
