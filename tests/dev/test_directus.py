"""The dev stack's Directus, for real: install, bootstrap, start/stop and the seed.

What the adapters rely on is checked through the API as they see it: typed fields and
relations, a read-only static token, the sample rows, and ``/activity`` recording every
create/update/delete with the item id as a string.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import psycopg2
import pytest
import pytest_asyncio
from mesh_tooling.dev.directus import (
    DEFAULT_ROWS,
    DirectusClient,
    DirectusService,
    DirectusSettings,
    ensure_installed,
    is_installed,
    seed_directus,
)
from mesh_tooling.dev.process import free_port

from mesh.domain import DomainConfig, FieldType
from mesh.errors import PortInUseError, StackError
from tests.fixtures.directus import ADMIN_EMAIL, ADMIN_PASSWORD, TIMINGS, DirectusHandle, cache_dir
from tests.support.directus_admin import counts

pytestmark = [pytest.mark.directus, pytest.mark.asyncio(loop_scope="session")]

EXPECTED_TYPES: Mapping[FieldType, str] = {
    FieldType.STRING: "string",
    FieldType.INTEGER: "integer",
    FieldType.LONG: "bigInteger",
    FieldType.FLOAT: "float",
    FieldType.BOOLEAN: "boolean",
    FieldType.DECIMAL: "decimal",
    FieldType.TIMESTAMP: "timestamp",
}


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str,
    *,
    json: Any = None,
    params: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """One API call with a bearer token: (status, parsed body)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with http.request(method, url, json=json, params=params, headers=headers) as resp:
        body = await resp.json(content_type=None) if resp.status != 204 else None
        return resp.status, body


async def admin(http: aiohttp.ClientSession, handle: DirectusHandle) -> DirectusClient:
    return await DirectusClient.login(http, handle.url, ADMIN_EMAIL, ADMIN_PASSWORD)


async def last_activity_id(api: DirectusClient) -> int:
    rows = await api.request("GET", "/activity", params={"sort": "-id", "limit": "1"})
    return int(rows[0]["id"]) if rows else 0


async def test_ensure_installed_is_instant_once_complete(directus_install: Path) -> None:
    lines: list[str] = []
    started = time.monotonic()
    assert await ensure_installed(cache_dir(), progress=lines.append) == directus_install
    assert time.monotonic() - started < 1
    assert lines == []
    assert is_installed(directus_install)


async def test_seed_creates_typed_fields_and_relations(
    seeded: DirectusHandle, sample_domain: DomainConfig, http: aiohttp.ClientSession
) -> None:
    api = await admin(http, seeded)
    collections = {c["collection"] for c in await api.request("GET", "/collections")}
    for entity in sample_domain.entities.values():
        assert entity.collection in collections
        fields = {f["field"]: f for f in await api.request("GET", f"/fields/{entity.collection}")}
        assert set(fields) == set(entity.fields), entity.collection
        for name, spec in entity.fields.items():
            got = fields[name]
            where = f"{entity.collection}.{name}"
            assert got["type"] == EXPECTED_TYPES[spec.type], where
            assert got["schema"]["is_nullable"] is (spec.nullable and name != entity.key), where
            if name == entity.key:
                assert got["schema"]["is_primary_key"] is True
                assert got["schema"]["has_auto_increment"] is True
            else:
                assert got["schema"]["is_unique"] is spec.unique, where
            if spec.type is FieldType.DECIMAL:
                assert got["schema"]["numeric_precision"] == spec.precision, where
                assert got["schema"]["numeric_scale"] == spec.scale, where
            if name in ("date_created", "date_updated"):
                assert name.replace("_", "-") in got["meta"]["special"], where
            if spec.references is not None:
                target = sample_domain.entities[spec.references].collection
                assert got["schema"]["foreign_key_table"] == target, where
                assert got["schema"]["data_type"] == "integer", where

    relations = {(r["collection"], r["field"]): r for r in await api.request("GET", "/relations")}
    for entity in sample_domain.entities.values():
        for name, spec in entity.fields.items():
            if spec.references is None:
                continue
            relation = relations[(entity.collection, name)]
            target = sample_domain.entities[spec.references].collection
            assert relation["related_collection"] == target
            # Many-to-one only: no O2M alias fields on the referenced side.
            assert relation["meta"]["one_field"] is None


async def test_sample_rows(
    seeded: DirectusHandle, sample_domain: DomainConfig, http: aiohttp.ClientSession
) -> None:
    assert seeded.seed is not None
    api = await admin(http, seeded)
    expected = {e.collection: DEFAULT_ROWS[name] for name, e in sample_domain.entities.items()}
    assert dict(seeded.seed.counts) == expected
    assert dict(seeded.seed.created) == expected
    assert await counts(api, sample_domain) == expected

    customer_ids = {
        r["id"]
        for r in await api.request(
            "GET", "/items/customers", params={"limit": "-1", "fields": "id"}
        )
    }
    invoices = await api.request("GET", "/items/invoices", params={"limit": "-1"})
    assert {i["customer"] for i in invoices} <= customer_ids
    first = invoices[0]
    # Decimals come back as exact strings, timestamps as UTC ISO 8601, filled by Directus.
    assert Decimal(first["total"]).as_tuple().exponent == -2
    assert first["date_created"].endswith("Z")
    assert first["date_updated"] is None


async def test_service_token_reads_items_and_activity_but_cannot_write(
    seeded: DirectusHandle, sample_domain: DomainConfig, http: aiohttp.ClientSession
) -> None:
    token, url = seeded.service_token, seeded.url
    status, body = await call(http, "GET", f"{url}/items/customers", token, params={"limit": "5"})
    assert status == 200
    assert len(body["data"]) == 5

    status, body = await call(
        http, "GET", f"{url}/activity", token, params={"limit": "-1", "fields": "collection"}
    )
    assert status == 200
    domain_collections = {e.collection for e in sample_domain.entities.values()}
    seeded_collections = {
        e.collection for n, e in sample_domain.entities.items() if DEFAULT_ROWS[n]
    }
    # The role sees the change feed of the domain only (no logins, users, permissions);
    # reservations have a feed once a saga writes one.
    assert seeded_collections <= {row["collection"] for row in body["data"]} <= domain_collections

    status, _ = await call(
        http, "POST", f"{url}/users", token, json={"email": "intruder@example.com"}
    )
    assert status == 403
    status, _ = await call(http, "POST", f"{url}/items/customers", token, json={"name": "x"})
    assert status == 403
    status, _ = await call(http, "GET", f"{url}/users", token)
    assert status == 403


async def test_second_seed_run_changes_nothing(
    seeded: DirectusHandle, sample_domain: DomainConfig, http: aiohttp.ClientSession
) -> None:
    api = await admin(http, seeded)
    before_counts = await counts(api, sample_domain)
    before_activity = await last_activity_id(api)

    started = time.monotonic()
    again = await seed_directus(
        seeded.url,
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
        sample_domain,
        service_token=seeded.service_token,
        saga_token=seeded.saga_token,
    )
    TIMINGS["seed again (no-op)"] = time.monotonic() - started

    assert again.changed_schema is False
    assert set(again.created.values()) == {0}
    assert dict(again.counts) == before_counts
    assert await counts(api, sample_domain) == before_counts
    # Nothing was written: the only new activity is the seed's own admin login.
    new = await api.request(
        "GET", "/activity", params={"filter[id][_gt]": str(before_activity), "fields": "action"}
    )
    assert [row["action"] for row in new] == ["login"]


async def test_api_changes_appear_in_activity_with_string_item_ids(
    seeded: DirectusHandle, http: aiohttp.ClientSession
) -> None:
    api = await admin(http, seeded)
    created = await api.request(
        "POST", "/items/customers", {"name": "Activity Probe", "email": None, "status": "active"}
    )
    item_id = created["id"]
    await api.request("PATCH", f"/items/customers/{item_id}", {"status": "inactive"})
    await api.request("DELETE", f"/items/customers/{item_id}")

    status, body = await call(
        http,
        "GET",
        f"{seeded.url}/activity",
        seeded.service_token,
        params={
            "filter[collection][_eq]": "customers",
            "filter[item][_eq]": str(item_id),
            "sort": "id",
            "fields": "id,action,item,collection",
        },
    )
    assert status == 200
    rows = body["data"]
    assert [r["action"] for r in rows] == ["create", "update", "delete"]
    assert all(r["item"] == str(item_id) for r in rows)
    assert rows[0]["id"] < rows[1]["id"] < rows[2]["id"]


async def test_restart_on_the_same_database_keeps_everything(
    seeded: DirectusHandle, sample_domain: DomainConfig, http: aiohttp.ClientSession
) -> None:
    api = await admin(http, seeded)
    before = await counts(api, sample_domain)

    await seeded.service.stop()
    assert not seeded.service.running
    started = time.monotonic()
    await seeded.service.bootstrap()  # as the dev stack does on every start
    TIMINGS["bootstrap (installed db)"] = time.monotonic() - started
    started = time.monotonic()
    await seeded.service.start()
    TIMINGS["restart"] = time.monotonic() - started

    assert await counts(await admin(http, seeded), sample_domain) == before
    status, _ = await call(http, "GET", f"{seeded.url}/items/invoices", seeded.service_token)
    assert status == 200


async def test_port_in_use_is_reported_before_starting(
    directus_install: Path, tmp_path: Path
) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        service = DirectusService(
            DirectusSettings(
                install_dir=directus_install,
                database_url="postgresql://postgres@127.0.0.1:5432/unused",
                state_dir=tmp_path,
                admin_email=ADMIN_EMAIL,
                admin_password=ADMIN_PASSWORD,
                port=port,
            )
        )
        with pytest.raises(PortInUseError, match=str(port)):
            await service.start()
        assert not service.running


async def test_rejected_admin_email_is_explained_and_repaired_later(
    directus_install: Path, make_database: Callable[[], str], tmp_path: Path
) -> None:
    database_url = make_database()

    def settings(email: str) -> DirectusSettings:
        return DirectusSettings(
            install_dir=directus_install,
            database_url=database_url,
            state_dir=tmp_path,
            admin_email=email,
            admin_password=ADMIN_PASSWORD,
            port=free_port(),
        )

    # Directus installs its tables, then rejects the address (not a public TLD)...
    with pytest.raises(StackError, match="public top-level domain"):
        await DirectusService(settings("admin@dictamesh.local")).bootstrap()
    # ...so a plain re-run would skip the admin forever; ours creates it.
    await DirectusService(settings(ADMIN_EMAIL)).bootstrap()
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT email FROM directus_users")
        assert cur.fetchall() == [(ADMIN_EMAIL,)]
    conn.close()
