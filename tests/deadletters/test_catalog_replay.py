"""Replaying a catalog letter once its cause is gone: the schema registry was unreachable
when the catalog met a schema id it had not seen, so the event became a dead letter
(``catalog-decode``, ``RegistryError``); with the registry back, the replayed event is
applied, a second replay is ignored by the version guard, and a dry run sends nothing."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from mesh.codec import AvroEventCodec, RegistryClient
from mesh.domain import DomainConfig
from mesh.schemas import load_event_schemas
from mesh.settings import Settings
from mesh.sources.events import ChangeEvent, Op
from tests.deadletters.support import Run, end_offsets, records, run_mesh
from tests.support.fleet import (
    Fleet,
    at_version,
    customer,
    dead_letters_of,
    entity,
    eventually,
    open_fleet,
)
from tests.support.waiting import wait_until

APP_ID = "deadletters-catalog"
PARTITIONS = 2


@pytest_asyncio.fixture(scope="module")
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    """Broker, registry, the entity topics and one ready worker."""
    root = tmp_path_factory.mktemp("deadletters-catalog")
    async with open_fleet(sample_domain, root, APP_ID, PARTITIONS, ["dl-a"]) as fleet:
        yield fleet


async def mesh(fleet: Fleet, *args: str) -> Run:
    return await run_mesh(
        {
            "MESH_BROKER_URL": f"kafka://{fleet.bootstrap}",
            "MESH_SCHEMA_REGISTRY_URL": fleet.registry_url,
            "MESH_APP_ID": APP_ID,
            "MESH_TOPIC_PARTITIONS": str(PARTITIONS),
        },
        *args,
    )


def evolved_codec(fleet: Fleet) -> AvroEventCodec:
    """The customer event schema with an optional field more: a new version, a new id."""
    schema = copy.deepcopy(load_event_schemas(fleet.domain, Settings().schemas_dir)["customer"])
    schema["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    subject = f"{fleet.domain.topic('customer')}-value"
    return AvroEventCodec(RegistryClient(fleet.registry_url), subject, schema)


async def stale_count(fleet: Fleet) -> float:
    metrics = await fleet.workers[0].metrics()
    return metrics.value("dictamesh_catalog_events_total", entity_type="customer", result="stale")


async def test_an_event_dead_lettered_while_the_registry_was_down_is_applied_when_replayed(
    fleet: Fleet,
) -> None:
    worker = fleet.workers[0]
    topic, source = fleet.domain.topic("customer"), fleet.domain.source("directus")
    await fleet.send("customer", 1, 10, customer("Before"), Op.CREATE)
    await eventually(worker, entity("customer", 1), at_version(10))
    codec = evolved_codec(fleet)
    assert codec.schema_id != fleet.codecs["customer"].schema_id  # registered while up

    change = ChangeEvent("customer", "1", Op.UPDATE, "customers", 20, None,
                         {"id": 1, **customer("Replayed")}, ("name",))  # fmt: skip
    value = codec.dumps({**change.envelope(source), "note": "from a newer producer"})
    own = [("dictamesh.tenant", b"default")]
    await fleet.registry.stop()
    try:
        sent = await (await fleet.producer.send(topic, value, key=change.key(source), headers=own))
        found = await dead_letters_of(fleet, topic, {sent.offset})
    finally:
        await fleet.registry.start()

        async def up() -> bool:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{fleet.registry_url}/subjects") as resp,
            ):
                return resp.status == 200

        await fleet.registry.wait_ready(up, timeout=30)
    headers = found[sent.offset]
    assert headers["dictamesh.stage"] == "catalog-decode"
    assert headers["dictamesh.error.class"] == "RegistryError"
    assert headers["dictamesh.tenant"] == "default"  # the event's own header, kept
    assert (await worker.get(entity("customer", 1))).body["version"] == 10

    listed = await mesh(fleet, "list", "--stage", "catalog-decode")
    assert listed.code == 0, listed.err
    [line] = [line for line in listed.out.splitlines() if f"{topic}[{sent.partition}]@" in line]
    assert "RegistryError: " in line
    letter = line.split()[0]
    shown = await mesh(fleet, "show", letter)
    assert '"note": "from a newer producer"' in shown.out  # decoded: the registry is back
    assert f"(Avro, schema id {codec.schema_id}, {topic}-value version 2)" in shown.out

    before = await end_offsets(fleet.bootstrap, topic, PARTITIONS)
    dry = await mesh(fleet, "replay", "--dry-run", letter)
    assert dry.code == 0, dry.err
    assert await end_offsets(fleet.bootstrap, topic, PARTITIONS) == before

    replayed = await mesh(fleet, "replay", letter)
    assert replayed.code == 0, replayed.err
    assert f"→ sent back to {topic}[{sent.partition}]@{before[sent.partition]}" in replayed.out
    got = await eventually(worker, entity("customer", 1), at_version(20))
    assert got.body["data"]["name"] == "Replayed"
    assert got.body["schema"]["version"] == 2
    resent = (await records(fleet.bootstrap, topic, sent.partition))[-1]
    assert list(resent.headers) == [
        *own,
        ("dictamesh.replayed-from", f"{APP_ID}.dead_letters:{letter}".encode()),
    ]

    # Twice: the catalog sees it again and keeps what it has (counted as stale).
    stale = await stale_count(fleet)
    again = await mesh(fleet, "replay", letter)
    assert again.code == 0, again.err

    async def ignored() -> bool:
        return await stale_count(fleet) == stale + 1

    await wait_until(ignored, timeout=30, what="the second replay counted as stale")
    assert (await worker.get(entity("customer", 1))).body == got.body
