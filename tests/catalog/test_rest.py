"""The catalog's REST API end to end: change events in, entities and relations out.

This module has its own Tansu broker and schema registry, and a fleet of two
``python -m mesh worker`` processes (app id ``catalog-rest``, 4 partitions per topic), so
keys spread over both workers and every request may need routing. Events are encoded with
our codec and produced with aiokafka, keyed by URN bytes. Scenarios run in file order on
one fleet; entity ids are distinct per scenario so they do not interfere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from mesh.domain import DomainConfig
from mesh.runtime.partitioning import key_partition
from mesh.runtime.restore import MIN_RECORDS
from mesh.sources.events import ChangeEvent, Op
from tests.support.fleet import (
    TIMEOUT,
    Fleet,
    at_version,
    customer,
    dead_letters_of,
    entity,
    eventually,
    invoice,
    invoice_item,
    open_fleet,
    product,
)
from tests.support.waiting import wait_until
from tests.support.workers import Answer

APP_ID = "catalog-rest"
PARTITIONS = 4


@pytest_asyncio.fixture(scope="module")
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    """Broker, registry, the entity topics and two ready workers of ``catalog-rest``."""
    root = tmp_path_factory.mktemp("catalog-rest")
    async with open_fleet(sample_domain, root, APP_ID, PARTITIONS, ["rest-a", "rest-b"]) as fleet:
        yield fleet


async def test_an_entity_by_id_with_its_metadata(fleet: Fleet) -> None:
    a, _ = fleet.workers
    await fleet.send("customer", 1, 10, customer("Ada"), Op.CREATE)
    await fleet.send("product", 1, 11, product("bolt", "12.50"), Op.CREATE)
    got = (await eventually(a, entity("customer", 1), at_version(10))).body
    topic = fleet.domain.topic("customer")
    assert got["urn"] == "urn:dictamesh:default:customer:1"
    assert (got["type"], got["id"], got["tenant"]) == ("customer", "1", "default")
    assert got["deleted"] is False
    assert got["op"] == "CREATE"
    assert got["first_seen"] == got["last_changed"] == "2026-11-02T09:30:10+00:00"
    assert got["source"] == {
        "system": "directus",
        "instance": "directus",
        "collection": "customers",
        "position": 10,
        "timestamp": "2026-11-02T09:30:10+00:00",
    }
    assert got["schema"]["subject"] == f"{topic}-value"
    assert got["schema"]["version"] == 1
    assert isinstance(got["schema"]["id"], int)
    assert got["data"] == {
        "id": 1,
        "name": "Ada",
        "email": "ada@example.com",
        "status": "active",
        "date_created": "2026-11-02T09:30:00+00:00",
        "date_updated": None,
    }
    price = (await eventually(a, entity("product", 1), at_version(11))).body["data"]["price"]
    assert price == "12.50"  # decimals as strings: exact, scale kept


async def test_a_newer_event_updates_and_a_stale_one_changes_nothing(fleet: Fleet) -> None:
    a, b = fleet.workers
    await fleet.send("customer", 11, 10, customer("Ada"), Op.CREATE)
    await fleet.send("customer", 11, 20, customer("Ada Two", "vip"))
    got = (await eventually(b, entity("customer", 11), at_version(20))).body
    assert got["data"]["name"] == "Ada Two"
    assert got["first_seen"] == "2026-11-02T09:30:10+00:00"
    assert got["last_changed"] == "2026-11-02T09:30:20+00:00"

    async def stale_count() -> float:
        labels = {"entity_type": "customer", "tenant": "default", "result": "stale"}
        return sum([await w.metric("dictamesh_catalog_events_total", **labels) for w in (a, b)])

    before = await stale_count()
    await fleet.send("customer", 11, 15, customer("Stale"))

    async def counted() -> bool:
        return await stale_count() == before + 1

    await wait_until(counted, timeout=TIMEOUT, what="the stale event to be counted")
    got = (await a.get(entity("customer", 11))).body
    assert (got["version"], got["data"]["name"]) == (20, "Ada Two")


async def test_a_deleted_entity_is_returned_marked_deleted(fleet: Fleet) -> None:
    a, _ = fleet.workers
    await fleet.send("customer", 3, 30, customer("Gone"), Op.CREATE)
    await fleet.send("customer", 3, 31, None)
    got = (await eventually(a, entity("customer", 3), at_version(31))).body
    assert got["deleted"] is True
    assert got["op"] == "DELETE"
    assert got["data"]["name"] == "Gone"  # the last state it had


def members(answer: Answer, relation: str) -> list[str]:
    return [m["id"] for m in answer.body["reverse"][relation]["members"]]


def has_members(relation: str, ids: list[str]) -> Callable[[Answer], bool]:
    return lambda a: a.status == 200 and members(a, relation) == ids


async def test_relations_follow_repointing_and_deletes(fleet: Fleet) -> None:
    a, b = fleet.workers
    await fleet.send("customer", 21, 40, customer("Cleo"), Op.CREATE)
    await fleet.send("customer", 22, 40, customer("Bob"), Op.CREATE)
    await fleet.send("product", 21, 40, product("nut", "0.10"), Op.CREATE)
    await fleet.send("invoice", 100, 41, invoice("INV-100", 21), Op.CREATE)
    await fleet.send("invoice", 101, 42, invoice("INV-101", 21), Op.CREATE)
    await fleet.send("invoice_item", 1000, 43, invoice_item(100, 21), Op.CREATE)
    await fleet.send("invoice_item", 1001, 44, invoice_item(100, 21), Op.CREATE)
    rels = entity("customer", 21) + "/relations"
    got = await eventually(a, rels, has_members("invoices", ["100", "101"]))
    assert got.body["reverse"]["invoices"]["type"] == "invoice"
    assert got.body["reverse"]["invoices"]["count"] == 2
    assert got.body["reverse"]["invoices"]["members"][0]["urn"] == (
        "urn:dictamesh:default:invoice:100"
    )
    assert got.body["forward"] == {}
    inv = entity("invoice", 100) + "/relations"
    got = await eventually(b, inv, has_members("items", ["1000", "1001"]))
    assert got.body["forward"]["customer"] == {
        "type": "customer",
        "id": "21",
        "urn": "urn:dictamesh:default:customer:21",
    }
    item = (await eventually(a, entity("invoice_item", 1000) + "/relations", at_version(43))).body
    assert item["forward"]["invoice"]["id"] == "100"
    assert item["forward"]["product"]["urn"] == "urn:dictamesh:default:product:21"
    assert item["reverse"] == {}

    await fleet.send("invoice", 100, 45, invoice("INV-100", 22))
    await eventually(b, rels, has_members("invoices", ["101"]))
    await eventually(a, entity("customer", 22) + "/relations", has_members("invoices", ["100"]))
    got = await eventually(a, inv, at_version(45))
    assert got.body["forward"]["customer"]["id"] == "22"

    await fleet.send("invoice_item", 1001, 46, None)
    await eventually(a, inv, has_members("items", ["1000"]))
    gone = (await eventually(b, entity("invoice_item", 1001) + "/relations", at_version(46))).body
    assert gone["deleted"] is True
    assert gone["forward"] == {"invoice": None, "product": None}


async def test_unknown_types_and_ids_are_404_json(fleet: Fleet) -> None:
    for worker in fleet.workers:
        got = await worker.get(entity("dragon", 1))
        assert got.status == 404
        assert got.body["error"]["code"] == "unknown_type"
        assert got.body["error"]["known_types"] == sorted(fleet.domain.entities)
        for path in (entity("customer", 424242), entity("customer", 424242) + "/relations"):
            got = await worker.get(path)
            assert got.status == 404, got
            assert got.body == {
                "error": {"code": "not_found", "message": "no customer with id 424242"}
            }


@pytest.mark.parametrize(
    "raw", ["abc", "-1", "007", "1.5", "%201", "2147483648", "%01", "1%E2%80%8B", "9" * 300]
)
async def test_malformed_ids_are_400(fleet: Fleet, raw: str) -> None:
    got = await fleet.workers[0].get(entity("customer", raw))
    assert got.status == 400, got
    assert got.body["error"]["code"] == "invalid_id"
    assert "customer id" in got.body["error"]["message"]


async def test_requests_are_answered_by_the_owner_of_the_key(fleet: Fleet) -> None:
    ids = range(2000, 2032)
    partitions = {
        i: (await fleet.send("customer", i, 100 + i, customer(f"C{i}"), Op.CREATE)).partition
        for i in ids
    }
    assert len(set(partitions.values())) == PARTITIONS
    owners: dict[int, str] = {}
    for i in ids:
        answers = [
            await eventually(w, entity("customer", i), at_version(100 + i)) for w in fleet.workers
        ]
        first, second = answers
        assert first.body == second.body
        owner = first.worker
        assert owner is not None
        assert second.worker == owner
        for asked, answer in zip(fleet.workers, answers, strict=True):
            # The partition the producer's murmur2 picked is the one read.
            assert answer.headers["X-Mesh-Partition"] == str(partitions[i])
            routed = answer.headers.get("X-Mesh-Routed-Via")
            assert routed == (None if asked.name == owner else asked.name), answer.headers
        assert owners.setdefault(partitions[i], owner) == owner  # one owner per partition
    assert set(owners.values()) == {w.name for w in fleet.workers}  # keys on both workers
    for partition, owner in owners.items():  # relations are routed the same way
        i = next(i for i in ids if partitions[i] == partition)
        other = next(w for w in fleet.workers if w.name != owner)
        got = await other.get(entity("customer", i) + "/relations")
        assert (got.status, got.worker) == (200, owner)
        assert got.headers["X-Mesh-Routed-Via"] == other.name


async def test_bad_messages_become_dead_letters_and_the_partition_flows(fleet: Fleet) -> None:
    topic = fleet.domain.topic("customer")
    key = fleet.domain.urn("default", "customer", "3000").encode()
    corrupt = await fleet.send_raw(topic, key, b"not avro at all")
    unknown = await fleet.send_raw(topic, key, b"\x00" + (987654).to_bytes(4, "big") + b"\x02")
    valid = await fleet.send("customer", 3000, 3000, customer("After"), Op.CREATE)
    assert corrupt.partition == unknown.partition == valid.partition
    await eventually(fleet.workers[0], entity("customer", 3000), at_version(3000))

    found = await dead_letters_of(fleet, topic, {corrupt.offset, unknown.offset})
    for sent, error in ((corrupt, "CodecError"), (unknown, "UnknownSchemaError")):
        headers = found[sent.offset]
        assert headers["dictamesh.partition"] == str(sent.partition)
        assert headers["dictamesh.stage"] == "catalog-decode"
        assert headers["dictamesh.error.class"] == error
        assert headers["dictamesh.error.message"]
    assert "987654" in found[unknown.offset]["dictamesh.error.message"]


async def test_events_of_an_undeclared_tenant_keyed_for_another_or_of_another_entity_are_dead(
    fleet: Fleet,
) -> None:
    topic, codec = fleet.domain.topic("customer"), fleet.codecs["customer"]
    source = fleet.domain.source("directus")
    change = ChangeEvent("customer", "3100", Op.CREATE, "customers", 3100, None,
                         {"id": 3100, **customer("Nobody's")})  # fmt: skip
    gamma = {**change.envelope(source), "tenant": "gamma"}
    # On the partition of the others, so each dead letter is known by its offset alone.
    partition = key_partition(change.key(source), PARTITIONS)
    gamma_key = next(
        key
        for n in range(3100, 3300)
        if key_partition(key := f"urn:dictamesh:gamma:customer:{n}".encode(), PARTITIONS)
        == partition
    )
    undeclared = await fleet.send_raw(topic, gamma_key, codec.dumps(gamma))
    # beta's payload under default's key: it would land in default's entity.
    beta = {**change.envelope(source), "tenant": "beta"}
    crossed = await fleet.send_raw(topic, change.key(source), codec.dumps(beta))
    # Keyed as customer 3100, but the record is customer 3199's.
    other = {**change.envelope(source), "after": {"id": 3199, **customer("Someone else")}}
    elsewhere = await fleet.send_raw(topic, change.key(source), codec.dumps(other))
    valid = await fleet.send("customer", 3100, 3101, customer("After"), Op.CREATE)
    assert undeclared.partition == crossed.partition == valid.partition
    await eventually(fleet.workers[0], entity("customer", 3100), at_version(3101))
    found = await dead_letters_of(
        fleet, topic, {undeclared.offset, crossed.offset, elsewhere.offset}
    )
    assert found[undeclared.offset]["dictamesh.stage"] == "catalog-tenant"
    assert "'gamma'" in found[undeclared.offset]["dictamesh.error.message"]
    assert found[crossed.offset]["dictamesh.stage"] == "catalog-key"
    assert "urn:dictamesh:beta:customer:3100" in found[crossed.offset]["dictamesh.error.message"]
    assert found[elsewhere.offset]["dictamesh.stage"] == "catalog-key"
    assert "only change the entity it names" in found[elsewhere.offset]["dictamesh.error.message"]


def counts_of(answer: Answer) -> dict[str, dict[str, int]]:
    return {t["name"]: t["counts"] for t in answer.body["types"]}


async def test_catalog_types_count_entities_across_the_fleet(fleet: Fleet) -> None:
    # One of each type, so every subject is registered even when run on its own.
    await fleet.send("customer", 4000, 4000, customer("Types"), Op.CREATE)
    await fleet.send("product", 4000, 4000, product("types", "1.00"), Op.CREATE)
    await fleet.send("invoice", 4000, 4000, invoice("INV-4000", 4000), Op.CREATE)
    await fleet.send("invoice_item", 4000, 4000, invoice_item(4000, 4000), Op.CREATE)
    await fleet.send("invoice_item", 4000, 4001, None)
    expected = fleet.expected_counts()
    assert expected["invoice_item"]["deleted"] >= 1
    for worker in fleet.workers:
        got = await eventually(worker, "/api/v1/catalog/types", lambda a: counts_of(a) == expected)
        assert got.body["counts"]["complete"] is True
        assert got.body["warnings"] == []
        owned = got.body["counts"]["workers"]
        assert sorted(owned) == ["rest-a", "rest-b"]
        assert all(owned.values())  # both workers hold (and count) partitions
        assert sorted(p for ps in owned.values() for p in ps) == list(range(PARTITIONS))
    by_name = {t["name"]: t for t in got.body["types"]}
    inv = by_name["invoice"]
    assert inv["graphql_name"] == "Invoice"
    assert inv["topic"] == "invoices.directus.entity_changed"
    assert inv["schema"]["subject"] == "invoices.directus.entity_changed-value"
    assert inv["schema"]["latest_version"] == 1
    assert inv["key"] == {"field": "id", "type": "integer"}
    assert inv["relations"]["reverse"] == {"items": {"type": "invoice_item", "field": "invoice"}}
    assert inv["relations"]["forward"] == {"customer": "customer"}


async def test_wiped_local_state_is_recovered_from_the_changelog(fleet: Fleet) -> None:
    """Enough records per partition that the batched restore rebuilds them (the last few
    of each partition, if any, are Faust's to replay)."""
    a, b = fleet.workers
    ids = range(5000, 5000 + 2 * MIN_RECORDS * PARTITIONS)  # keys on every partition
    await asyncio.gather(*(fleet.send("customer", i, i, customer(f"W{i}"), Op.CREATE) for i in ids))
    await eventually(a, "/api/v1/catalog/types", lambda a: counts_of(a) == fleet.expected_counts())
    await b.stop()
    b.wipe()
    await b.start()
    await fleet.wait_stable()
    assert await b.metric("dictamesh_worker_restored_records_total") >= MIN_RECORDS
    answered_by: set[str] = set()
    # Every entity of the earlier tests, one in 16 of the bulk (the counts below cover all).
    checked = [k for k in sorted(fleet.latest) if int(k[1]) not in ids or int(k[1]) % 16 == 0]
    for entity_type, entity_id in checked:
        version, deleted = fleet.latest[(entity_type, entity_id)]
        got = await eventually(b, entity(entity_type, entity_id), at_version(version))
        assert got.body["deleted"] is deleted
        answered_by.add(str(got.worker))
    assert "rest-b" in answered_by  # the rebuilt worker serves keys again
    expected = fleet.expected_counts()
    await eventually(b, "/api/v1/catalog/types", lambda a: counts_of(a) == expected)


async def test_types_tolerate_the_registry_being_down(fleet: Fleet) -> None:
    await fleet.registry.stop()
    got = await fleet.workers[0].get("/api/v1/catalog/types")
    assert got.status == 200
    assert all(t["schema"]["latest_version"] is None for t in got.body["types"])
    assert any("schema registry" in w for w in got.body["warnings"])
    assert counts_of(got) == fleet.expected_counts()
