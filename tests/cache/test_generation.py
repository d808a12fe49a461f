"""The shared cache is used only under a fleet generation read from Kafka, so Kafka's
state recreated while Redis keeps the same app id never answers from the earlier state.

* A worker's read cache as the worker builds it (:func:`build_read_cache`), on a real
  Redis, with Kafka down when it starts and a real broker (Tansu) started later there.
* A fleet of two ``mesh worker`` processes sharing a real Redis, on a broker of its own
  that the test restarts on the same port (memory storage: a restart is a new, empty
  Kafka): running workers move to the new generation; a fleet started again with the
  same app id on a recreated Kafka answers the new data, while the earlier generation's
  answers are still in Redis, unexpired.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from mesh_tooling.dev.broker import start_broker
from mesh_tooling.dev.process import free_port
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from redis.asyncio import Redis

from mesh.cache import ReadCache, build_read_cache
from mesh.codec import RegistryClient, build_codecs
from mesh.deadletter import dead_letter_topic
from mesh.domain import DomainConfig
from mesh.schemas import load_event_schemas
from mesh.settings import Settings
from mesh.sources.events import Op
from tests.support.auth import bearer
from tests.support.fleet import Fleet, customer, entity, eventually, invoice
from tests.support.services import restartable_broker, start_registry
from tests.support.waiting import wait_until
from tests.support.workers import Answer, MeshWorker, start_workers

KEY = b"entities_customer|urn:dictamesh:default:customer:1"
PARTITIONS = 4
QUERY = '{ customer(id: "1") { name invoices { number } } }'


@pytest_asyncio.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _drop(redis: Redis, app_id: str) -> None:
    async for name in redis.scan_iter(match=f"{app_id}:*"):
        await redis.delete(name)


async def test_without_a_generation_redis_is_not_used_and_changes_wait(
    redis: Redis, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mesh.cache")
    app_id = f"gen-{secrets.token_hex(4)}"
    port = free_port()  # nothing listens there yet: Kafka is down at start
    settings = Settings(
        app_id=app_id,
        broker_url=f"kafka://127.0.0.1:{port}",
        redis_url=SecretStr(redis_url),
        state_dir=tmp_path,
    )
    cache: ReadCache = build_read_cache(settings, CollectorRegistry())
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(_drop, redis, app_id)
        cleanup.push_async_callback(cache.close)
        cache.start()
        await asyncio.sleep(0.5)
        assert cache.generation is not None
        assert cache.generation.current is None
        assert "runs without the shared cache" in caplog.text
        # Reads go to the owners (no Redis answer), and nothing is written to Redis.
        assert await cache.lookup([KEY]) is None
        await cache.fill([(KEY, "token", {"name": "guessed"})])
        # A change waits for the generation: it must reach where readers will look.
        invalidation = asyncio.ensure_future(cache.invalidate({KEY}))
        await asyncio.sleep(0.5)
        assert not invalidation.done()
        assert [name async for name in redis.scan_iter(match=f"{app_id}:*")] == []

        broker = await start_broker("127.0.0.1", port, tmp_path / "logs")
        cleanup.push_async_callback(broker.stop)
        await asyncio.wait_for(invalidation, timeout=15)
        generation = cache.generation.current
        assert generation is not None
        assert f"fleet generation {generation}" in caplog.text

        # Now under the generation: a miss takes a token, a fill is then a hit.
        [(token, value)] = await cache.lookup([KEY])
        assert value is None
        await cache.fill([(KEY, token, {"name": "Ada"})])
        [(_, value)] = await cache.lookup([KEY])
        assert value == {"name": "Ada"}
        names = [name async for name in redis.scan_iter(match=f"{app_id}:*")]
        assert names == [f"{app_id}:cache:{generation}:".encode() + KEY]

        # A rebalance: Redis is off until the generation is read again (the same one).
        cache.partitions_moved()
        assert await cache.lookup([KEY]) is None
        await wait_until(lambda: _known(cache), timeout=15, what="the generation read again")
        assert cache.generation.current == generation
        [(_, value)] = await cache.lookup([KEY])
        assert value == {"name": "Ada"}


async def _known(cache: ReadCache) -> bool:
    return cache.generation is not None and cache.generation.current is not None


# -- a fleet across Kafka generations ---------------------------------------------------


async def _create_topics(bootstrap: str, domain: DomainConfig, app_id: str) -> None:
    topics = [domain.topic(t) for t in domain.entities] + [dead_letter_topic(app_id)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    finally:
        await admin.close()


async def _producer(bootstrap: str) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    return producer


async def _ask(worker: MeshWorker, query: str) -> Any:
    async with (
        aiohttp.ClientSession(headers=bearer()) as http,
        http.post(f"{worker.base}/graphql", json={"query": query}) as resp,
    ):
        answer = await resp.json()
    assert resp.status == 200, answer
    assert "errors" not in answer, answer
    return answer["data"]


async def _answers(worker: MeshWorker, expected: Any) -> bool:
    return bool(await _ask(worker, QUERY) == expected)


async def _generations(workers: Sequence[MeshWorker]) -> set[str]:
    """The fleet generation each worker reports (``""``: one is reading it)."""
    found = set()
    for worker in workers:
        metrics = await worker.metrics()
        known = [
            labels["generation"]
            for name, labels, value in metrics.samples
            if name == "dictamesh_fleet_generation_info" and value == 1
        ]
        found.add(known[0] if known else "")
    return found


async def _agreed_generation(workers: Sequence[MeshWorker], *, other_than: str = "") -> str:
    seen: set[str] = set()

    async def agreed() -> bool:
        nonlocal seen
        seen = await _generations(workers)
        return len(seen) == 1 and "" not in seen and other_than not in seen

    wanted = f"one generation other than {other_than!r}" if other_than else "one generation"
    await wait_until(agreed, timeout=30, what=lambda: f"{wanted} on every worker: {seen}")
    return seen.pop()


async def _cached(redis: Redis, app_id: str, generation: str) -> dict[bytes, Any]:
    """The shared cache's filled entries of one generation: ``{key: value}``."""
    prefix = f"{app_id}:cache:{generation}:".encode()
    entries = {}
    async for name in redis.scan_iter(match=prefix + b"*"):
        value = await redis.hget(name, "v")
        if value is not None:
            entries[name.removeprefix(prefix)] = orjson.loads(value)
    return entries


async def _members(worker: MeshWorker, customer_id: int, ids: list[str]) -> None:
    """Wait until the catalog's tables (REST reads no cache) list ``ids`` as the
    customer's invoices."""

    def shows(answer: Answer) -> bool:
        if answer.status != 200:
            return False
        members = answer.body["reverse"]["invoices"]["members"]
        return sorted(m["id"] for m in members) == ids

    await eventually(worker, entity("customer", customer_id) + "/relations", shows)


async def _produce(fleet: Fleet, name: str, invoices_of: int) -> None:
    """Customer 1 named ``name``, customer 2, and invoices 10 and 11 of ``invoices_of``;
    positions from 1, as a new source's would be."""
    await fleet.send("customer", 1, 1, customer(name), Op.CREATE)
    await fleet.send("customer", 2, 2, customer("Bob"), Op.CREATE)
    for position, number in ((3, 10), (4, 11)):
        await fleet.send("invoice", number, position, invoice(f"INV-{number}", invoices_of))


async def test_a_recreated_kafka_never_answers_from_the_earlier_generations_cache(
    sample_domain: DomainConfig, tmp_path: Path, redis: Redis, redis_url: str
) -> None:
    app_id = f"gen-fleet-{secrets.token_hex(4)}"
    logs = tmp_path / "logs"
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(_drop, redis, app_id)
        broker = await restartable_broker(cleanup, logs)
        registry, registry_url = await start_registry(tmp_path / "registry.db", logs)
        cleanup.push_async_callback(registry.stop)
        await _create_topics(broker.bootstrap, sample_domain, app_id)
        env = {
            "MESH_BROKER_URL": f"kafka://{broker.bootstrap}",
            "MESH_SCHEMA_REGISTRY_URL": registry_url,
            "MESH_REDIS_URL": redis_url,
            "MESH_TOPIC_PARTITIONS": str(PARTITIONS),
            "MESH_REBALANCE_TIMEOUT_S": "3",
            "MESH_ROCKSDB_BLOCK_CACHE_MB": "8",
            # No Directus here: the source adapter backs off against a closed port.
            "MESH_DIRECTUS_URL": f"http://127.0.0.1:{free_port()}",
            "MESH_DIRECTUS_TOKEN": "unused",
        }
        workers = [
            MeshWorker(name, app_id=app_id, state_dir=tmp_path / name, log_dir=logs, env=env)
            for name in ("gen-a", "gen-b")
        ]
        await start_workers(cleanup, workers)
        schemas = load_event_schemas(sample_domain, Settings().schemas_dir)
        fleet = Fleet(
            domain=sample_domain,
            bootstrap=broker.bootstrap,
            registry_url=registry_url,
            dead_letter_topic=dead_letter_topic(app_id),
            producer=await _producer(broker.bootstrap),
            codecs=build_codecs(sample_domain, schemas, RegistryClient(registry_url)),
            workers=workers,
            registry=registry,
        )
        cleanup.push_async_callback(lambda: fleet.producer.stop())
        await fleet.wait_stable()

        # Generation 1: customer 1 has invoices 10 and 11, and every answer is cached.
        await _produce(fleet, "Ada", invoices_of=1)
        await _members(workers[0], 1, ["10", "11"])
        old = {"customer": {"name": "Ada", "invoices": [{"number": "INV-10"},
                                                        {"number": "INV-11"}]}}  # fmt: skip
        for worker in workers:
            answered = functools.partial(_answers, worker, old)
            await wait_until(answered, timeout=30, what=f"{worker.name} answering {old}")
        first = await _agreed_generation(workers)
        relation = (
            b"relations_customer_invoices|" + sample_domain.urn("default", "customer", "1").encode()
        )
        cached = await _cached(redis, app_id, first)
        # One of the two workers read customer 1's invoices from the other, through Redis.
        assert relation in cached, cached.keys()

        # The broker restarts under the running workers (Kafka's state is gone): they are
        # told to rejoin the group, and read the generation again, a new one.
        await broker.restart()
        second = await _agreed_generation(workers, other_than=first)

        # Kafka recreated once more, and the fleet started again on it with the same app
        # id, the same Redis and the same volumes. Their local tables are Kafka's state
        # too: each worker sees the new generation and drops them (kept, Faust's recovery
        # would refuse them, their offsets being past the new changelogs' ends).
        await asyncio.gather(*(worker.stop() for worker in workers))
        await broker.restart()
        await _create_topics(broker.bootstrap, sample_domain, app_id)
        await fleet.producer.stop()
        fleet.producer = await _producer(broker.bootstrap)
        for worker in workers:
            await worker.start()
        await fleet.wait_stable()
        for worker in workers:
            assert "Kafka's state was recreated" in worker.run_log(), worker.log_tail()

        # The same keys, other values: customer 1 renamed, its invoices now customer 2's.
        # The change to customer 1's invoices is no write to customer 1's relation index
        # (nothing was there in this Kafka): no invalidation reaches the entry cached in
        # Redis by the first generation. Only the generation keeps it from being read.
        await _produce(fleet, "Grace", invoices_of=2)
        await _members(workers[0], 2, ["10", "11"])
        await _members(workers[0], 1, [])
        new = {"customer": {"name": "Grace", "invoices": []}}
        for worker in workers:
            for _ in range(2):  # a miss, then the cached answer
                assert await _ask(worker, QUERY) == new, worker.name
        third = await _agreed_generation(workers)
        assert third not in (first, second)
        assert relation in await _cached(redis, app_id, third)

        # The control: generation 1's answer is still in Redis, unexpired, under the same
        # app id: had the fleet looked there, it would have answered it.
        still = await _cached(redis, app_id, first)
        assert still[relation] == cached[relation]
        assert cached[relation] != (await _cached(redis, app_id, third))[relation]
        ttl = await redis.ttl(f"{app_id}:cache:{first}:".encode() + relation)
        assert ttl > 0
