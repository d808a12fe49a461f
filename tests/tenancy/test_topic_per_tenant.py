"""``topic_per_tenant: true``: each tenant's events on topics of its own, read as before.

A one-worker fleet on a copy of the sample domain config with the option on: the same
customer id published by both tenants lands on ``<tenant>.customers.directus.entity_changed``
(never on the shared topic), and each tenant's token reads its own customer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from mesh.domain import DomainConfig, load_domain
from mesh.settings import Settings
from mesh.sources.events import Op
from mesh.topics import fleet_topics
from tests.support.auth import bearer
from tests.support.fleet import Fleet, customer, entity, open_fleet
from tests.support.waiting import wait_until

APP_ID = "topic-per-tenant"


@pytest.fixture(scope="module")
def per_tenant_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = yaml.safe_load(Settings().domain_config.read_text())
    data["topic_per_tenant"] = True
    path = tmp_path_factory.mktemp("per-tenant") / "domain.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))  # field order is the schema's
    return path


@pytest_asyncio.fixture(scope="module")
async def fleet(
    per_tenant_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    domain = load_domain(per_tenant_config)
    root = tmp_path_factory.mktemp("topic-per-tenant")
    env = {"MESH_DOMAIN_CONFIG": str(per_tenant_config)}
    async with open_fleet(domain, root, APP_ID, 2, ["tpt-a"], env) as fleet:
        yield fleet


def test_each_tenant_has_its_own_topics(per_tenant_config: Path) -> None:
    domain = load_domain(per_tenant_config)
    assert domain.topics("customer") == [
        "default.customers.directus.entity_changed",
        "beta.customers.directus.entity_changed",
    ]
    assert domain.topic("customer", "beta") == "beta.customers.directus.entity_changed"
    names = {t.name for t in fleet_topics(Settings(), domain)}
    assert {
        "default.invoices.directus.entity_changed",
        "beta.invoices.directus.entity_changed",
    } <= names
    assert "invoices.directus.entity_changed" not in names


async def _records(fleet: Fleet, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=fleet.bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(parts)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def _name(fleet: Fleet, tenant: str) -> object:
    async with (
        aiohttp.ClientSession(headers=bearer(tenant)) as http,
        http.get(fleet.workers[0].base + entity("customer", 1)) as resp,
    ):
        if resp.status != 200:
            return None
        body = await resp.json()
        return (body["urn"], body["data"]["name"])


async def test_tenants_events_stay_on_their_topics_and_read_apart(
    fleet: Fleet, sample_domain: DomainConfig
) -> None:
    for tenant in ("default", "beta"):
        await fleet.send("customer", 1, 10, customer(f"{tenant} one"), Op.CREATE, tenant=tenant)
    for tenant in ("default", "beta"):
        expected = (f"urn:dictamesh:{tenant}:customer:1", f"{tenant} one")

        async def reads(tenant: str = tenant, expected: object = expected) -> bool:
            return await _name(fleet, tenant) == expected

        await wait_until(reads, timeout=30, what=f"{tenant}'s customer 1")
        assert await _records(fleet, f"{tenant}.customers.directus.entity_changed") == 1
    shared = sample_domain.topic("customer")
    assert shared == "customers.directus.entity_changed"
    assert shared not in await _topics(fleet)


async def _topics(fleet: Fleet) -> set[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=fleet.bootstrap)
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()
