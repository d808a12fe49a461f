"""``mesh bench freshness``: how soon a Directus write becomes an event on Kafka.

Runs against the local stack (`make dev`). Part one writes items one at a time and
measures, per item, the delay from the moment Directus acknowledged the write to the
moment its CREATE event arrived on Kafka (p50/p99). Part two bulk-loads items in requests
of 500 and compares the event rate with the rate Directus accepted the writes at, in
the same run: a ratio near 1 means the load is limited by Directus, not the adapter.

``--through graphql`` measures instead what a client sees: per single write, alternately a
new item and a rename of the one made before, the delay from Directus' acknowledgement to
the first answer of the stack's worker to ``POST /graphql`` (a dev issuer token, as ``mesh
token`` mints) that shows the written name, polled every :data:`POLL_S`, the writes
apart by a random pause (:data:`PAUSE_S`); p50/p99/max against the freshness SLO (p99 < 2 s).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

from mesh.codec import AvroEventCodec, RegistryClient
from mesh.domain import DomainConfig, load_domain
from mesh.errors import StackError
from mesh.schemas import load_event_schemas
from mesh_tooling.dev.readiness import wait_until_following
from mesh_tooling.settings import DevSettings

BULK_BATCH = 500
SLO_P99_S = 2.0
"""Freshness SLO: a write is visible in GraphQL within 2 s at the 99th percentile."""
POLL_S = 0.01
"""How often the GraphQL mode asks again (the delays are at most this much late)."""
PAUSE_S = 0.5
"""The GraphQL mode waits a random 0 to 0.5 s after a write showed before the next one:
writing again as soon as the last one showed locks the writes onto the adapter's poll
cycle (measured: every delay within 10 ms of 745 ms), where real writes come at any
moment of it."""
BY_ID = "query ($id: ID!) { customer(id: $id) { id name } }"


@dataclass
class _Arrivals:
    """Receive times of CREATE events by entity id, filled by the consumer task."""

    times: dict[str, float] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ids <= self.times.keys():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                missing = len(ids - self.times.keys())
                raise StackError(f"{missing} events did not arrive within {timeout:.0f} s")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                continue


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class FreshnessBench:
    """One benchmark run against the stack described by ``settings``."""

    def __init__(self, settings: DevSettings, entity_type: str = "customer") -> None:
        self.settings = settings
        self.domain: DomainConfig = load_domain(settings.domain_config)
        self.entity_type = entity_type
        self.entity = self.domain.entities[entity_type]
        self.topic = self.domain.topic(entity_type)
        schema = load_event_schemas(self.domain, settings.schemas_dir)[entity_type]
        self.codec = AvroEventCodec(
            RegistryClient(settings.schema_registry_url), f"{self.topic}-value", schema
        )
        self.source = self.domain.entity_sources(entity_type)[0]
        self.base = self.source.url.rstrip("/")
        self.arrivals = _Arrivals()
        self.run_id = uuid.uuid4().hex[:8]

    def _item(self, n: int) -> dict[str, Any]:
        return {"name": f"bench {self.run_id} {n}", "email": None, "status": "bench"}

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.monotonic()
            for messages in batch.values():
                for message in messages:
                    event = self.codec.loads(message.value)
                    if event["op"] == "CREATE":
                        self.arrivals.times.setdefault(event["entity_id"], now)
            if batch:
                self.arrivals.changed.set()

    async def _login(self, http: aiohttp.ClientSession) -> str:
        body = {
            "email": self.settings.directus_admin_email,
            "password": self.settings.directus_admin_password.get_secret_value(),
        }
        async with http.post(f"{self.base}/auth/login", json=body) as resp:
            if resp.status != 200:
                raise StackError(
                    f"Directus admin login failed ({resp.status}): {await resp.text()}"
                )
            return str((await resp.json())["data"]["access_token"])

    async def _create(self, http: aiohttp.ClientSession, payload: Any) -> list[str]:
        url = f"{self.base}/items/{self.entity.collection}"
        async with http.post(url, json=payload) as resp:
            if resp.status != 200:
                raise StackError(f"Directus refused the write ({resp.status}): {await resp.text()}")
            data = (await resp.json())["data"]
        rows = data if isinstance(data, list) else [data]
        return [str(row[self.entity.key]) for row in rows]

    async def run(self, items: int, bulk: int) -> dict[str, float]:
        """Measure; return the figures (seconds, items/s and their ratio)."""
        bootstrap = self.settings.bootstrap_servers
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        try:
            await consumer.start()
        except Exception as exc:
            raise StackError(
                f"cannot reach the broker at {self.settings.broker_url} ({exc}); run `make dev`"
            ) from None
        collector: asyncio.Task[None] | None = None
        try:
            partitions = consumer.partitions_for_topic(self.topic) or {0}
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:  # resolve the end offsets now, before anything is written
                await consumer.position(tp)
            collector = asyncio.create_task(self._consume(consumer))
            async with aiohttp.ClientSession() as http:
                try:
                    token = await self._login(http)
                except aiohttp.ClientError as exc:
                    raise StackError(
                        f"cannot reach Directus at {self.base} ({exc}); run `make dev`"
                    ) from None
                http.headers["Authorization"] = f"Bearer {token}"
                figures = await self._single_writes(http, items)
                figures.update(await self._bulk(http, bulk))
            return figures
        finally:
            if collector is not None:
                collector.cancel()
            await consumer.stop()

    async def _single_writes(self, http: aiohttp.ClientSession, items: int) -> dict[str, float]:
        written: dict[str, float] = {}
        for n in range(items):
            (item_id,) = await self._create(http, self._item(n))
            written[item_id] = time.monotonic()
            print(f"\r  single writes: {n + 1}/{items}", end="", flush=True)
        print()
        await self.arrivals.wait_for(set(written), timeout=60)
        delays = [self.arrivals.times[i] - t for i, t in written.items()]
        return {
            "items": float(items),
            "p50_s": statistics.median(delays),
            "p99_s": _percentile(delays, 0.99),
            "max_s": max(delays),
        }

    async def _rename(self, http: aiohttp.ClientSession, item_id: str, name: str) -> None:
        url = f"{self.base}/items/{self.entity.collection}/{item_id}"
        async with http.patch(url, json={"name": name}) as resp:
            if resp.status != 200:
                raise StackError(f"Directus refused the write ({resp.status}): {await resp.text()}")

    async def _visible(
        self, gql: aiohttp.ClientSession, url: str, item_id: str, name: str, timeout: float
    ) -> float:
        """Ask ``url`` for the item until its answer shows ``name``; when it did."""
        body = {"query": BY_ID, "variables": {"id": item_id}}
        deadline = time.monotonic() + timeout
        answer: Any = None
        while time.monotonic() < deadline:
            async with gql.post(url, json=body) as resp:
                if resp.status in (401, 403):
                    raise StackError(
                        f"the worker refused the dev issuer's token ({resp.status}): "
                        f"{await resp.text()}; is MESH_STATE_DIR the stack's?"
                    )
                answer = await resp.json(content_type=None)
            seen = time.monotonic()
            customer = (answer.get("data") or {}).get(self.entity_type)
            if customer is not None and customer.get("name") == name:
                return seen
            await asyncio.sleep(POLL_S)
        raise StackError(f"{name!r} not visible in GraphQL after {timeout:.0f} s: {answer}")

    async def run_graphql(self, items: int, worker: str, token: str) -> dict[str, list[float]]:
        """Per single write, the seconds until the worker's GraphQL answer shows it, by
        kind (``create``, ``rename``)."""
        delays: dict[str, list[float]] = {"create": [], "rename": []}
        url = f"{worker}/graphql"
        pauses = random.Random(0)
        async with (
            aiohttp.ClientSession() as http,
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as gql,
        ):
            try:
                http.headers["Authorization"] = f"Bearer {await self._login(http)}"
            except aiohttp.ClientError as exc:
                raise StackError(
                    f"cannot reach Directus at {self.base} ({exc}); run `make dev`"
                ) from None
            item_id = ""
            for n in range(items):
                name = f"bench {self.run_id} {n}"
                if n % 2 == 0:
                    (item_id,) = await self._create(http, {**self._item(n), "name": name})
                    kind = "create"
                else:
                    await self._rename(http, item_id, name)
                    kind = "rename"
                written = time.monotonic()
                seen = await self._visible(gql, url, item_id, name, timeout=60)
                delays[kind].append(seen - written)
                print(f"\r  single writes: {n + 1}/{items}", end="", flush=True)
                await asyncio.sleep(pauses.uniform(0, PAUSE_S))
            print()
        return delays

    async def _bulk(self, http: aiohttp.ClientSession, bulk: int) -> dict[str, float]:
        ids: set[str] = set()
        started = time.monotonic()
        for offset in range(0, bulk, BULK_BATCH):
            count = min(BULK_BATCH, bulk - offset)
            ids.update(await self._create(http, [self._item(offset + n) for n in range(count)]))
            print(f"\r  bulk load: {len(ids)}/{bulk}", end="", flush=True)
        written = time.monotonic()
        print()
        await self.arrivals.wait_for(ids, timeout=300)
        last_event = max(self.arrivals.times[i] for i in ids)
        directus_rate = bulk / (written - started)
        event_rate = bulk / (last_event - started)
        return {
            "bulk_items": float(bulk),
            "directus_items_per_s": directus_rate,
            "events_per_s": event_rate,
            "ratio": event_rate / directus_rate,
            "catch_up_s": last_event - written,
        }


def _graphql_lines(delays: dict[str, list[float]]) -> list[str]:
    """The GraphQL mode's report: every write, then each kind; p99 against the SLO."""
    everything = [d for values in delays.values() for d in values]
    p99 = _percentile(everything, 0.99)
    met = "met" if p99 < SLO_P99_S else "NOT met"
    lines = [
        f"write → visible in GraphQL, {len(everything)} writes: p50 "
        f"{statistics.median(everything) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max "
        f"{max(everything) * 1000:.0f} ms — SLO p99 < {SLO_P99_S:.0f} s: {met}"
    ]
    for kind, values in delays.items():
        if values:
            lines.append(
                f"  {kind + 's':<8} ({len(values)}): p50 {statistics.median(values) * 1000:.0f} "
                f"ms, p99 {_percentile(values, 0.99) * 1000:.0f} ms, max "
                f"{max(values) * 1000:.0f} ms"
            )
    return lines


def run_freshness(settings: DevSettings, items: int, bulk: int, through: str = "kafka") -> int:
    """``mesh bench freshness``: print the figures; return the exit code."""
    bench = FreshnessBench(settings)
    worker = f"http://{settings.web_host}:{settings.web_port}"
    if through == "graphql":
        from mesh_tooling.dev.issuer import DevIssuer

        print(
            f"freshness through GraphQL against {bench.base} and {worker}/graphql (entity "
            f"{bench.entity_type}): {items} single writes, new items and renames alternated, "
            f"each polled every {POLL_S * 1000:.0f} ms until the answer shows it, then a random "
            f"pause of up to {PAUSE_S * 1000:.0f} ms"
        )
        waited = asyncio.run(wait_until_following([worker], [bench.source.name], timeout=300))
        if waited >= 1:
            print(f"waited {waited:.0f} s for the worker at {worker} to follow the source")
        issuer = DevIssuer.in_dir(settings.state_dir / "issuer")
        token = issuer.mint(bench.source.tenant, subject="bench-freshness", ttl_s=3600)
        delays = asyncio.run(bench.run_graphql(items, worker, token))
        print("\n".join(_graphql_lines(delays)))
        return 0
    print(
        f"freshness against {bench.base} (entity {bench.entity_type}, topic {bench.topic}): "
        f"{items} single writes, then {bulk} items in requests of {BULK_BATCH}"
    )
    sources = [bench.source.name]
    waited = asyncio.run(wait_until_following([worker], sources, timeout=300))
    if waited >= 1:
        print(f"waited {waited:.0f} s for the worker at {worker} to follow {sources[0]}")
    figures = asyncio.run(bench.run(items, bulk))
    print(
        f"write → event delay: p50 {figures['p50_s'] * 1000:.0f} ms, "
        f"p99 {figures['p99_s'] * 1000:.0f} ms, max {figures['max_s'] * 1000:.0f} ms "
        f"(poll interval {bench.source.poll_interval_ms} ms)"
    )
    print(
        f"bulk load of {bulk}: Directus accepted {figures['directus_items_per_s']:.0f} items/s, "
        f"events arrived at {figures['events_per_s']:.0f} events/s "
        f"(ratio {figures['ratio']:.2f}); last event {figures['catch_up_s'] * 1000:.0f} ms "
        "after the last write"
    )
    return 0
