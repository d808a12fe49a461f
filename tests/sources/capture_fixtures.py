"""Helpers for the end-to-end change-capture tests (``tests/sources/test_capture.py``).

They drive the system as a user does, with nothing mocked:

- :func:`wait_until` polls a condition until a deadline (no fixed sleeps).
- :class:`KafkaLog` reads every topic matching a pattern from the beginning (aiokafka);
  :class:`EventLog` decodes the ``*.directus.entity_changed`` topics with confluent-kafka's
  ``AvroDeserializer`` (an independent Confluent client, not our codec).
- :class:`MeshWorker` runs ``python -m mesh worker`` as an operator would and reads its
  ``/readyz`` and ``/metrics``.
- :class:`DirectusAdmin` writes and reads Directus through its REST API as its admin.
- :func:`expected_after` is what an item read from Directus must look like in an event's
  ``after`` record, derived here from the domain config (not from the adapter's mapping).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import aiohttp
from aiokafka import AIOKafkaConsumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from mesh_tooling.dev.broker import start_broker
from mesh_tooling.dev.directus import DirectusClient
from mesh_tooling.dev.process import ManagedProcess, free_port
from prometheus_client.parser import text_string_to_metric_families

from mesh.domain import DomainConfig, EntitySpec, FieldType
from mesh.errors import StackError

if TYPE_CHECKING:
    from tests.fixtures.directus import DirectusHandle

FEED_ACTIONS = ("create", "update", "delete")
OPS = {"create": "CREATE", "update": "UPDATE", "delete": "DELETE"}
"""The op of the event an activity row yields while the item still exists."""


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    *,
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.1,
) -> None:
    """Await ``check()`` until it returns True; fail after ``timeout`` s saying ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() >= deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"not within {timeout:.0f} s: {described}")
        await asyncio.sleep(interval)


# -- Kafka ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One Kafka record as read, with its headers decoded."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: Mapping[str, str]


class KafkaLog:
    """Every record of the topics matching ``pattern``, read from the beginning.

    New topics (and partitions) are noticed within ``metadata_max_age_ms``. When the
    assignment grows, aiokafka re-reads from the beginning; records are kept once each
    by (topic, partition, offset).
    """

    def __init__(self, bootstrap: str, pattern: str) -> None:
        self.pattern = pattern
        self.records: list[Record] = []
        self._seen: set[tuple[str, int, int]] = set()
        self._next: dict[tuple[str, int], int] = {}
        """Per partition: the offset after the highest one read."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            metadata_max_age_ms=500,
        )

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe(pattern=self.pattern)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def fetch(self, timeout_ms: int = 200) -> list[Record]:
        """Read what arrived since the last call; returns the new records."""
        new: list[Record] = []
        if not self._consumer.assignment():
            # No topic matches yet: getmany() would wait for one without a timeout.
            await asyncio.sleep(timeout_ms / 1000)
            return new
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=10_000)
        for messages in batch.values():
            for msg in messages:
                where = (msg.topic, msg.partition, msg.offset)
                if where in self._seen:
                    continue
                self._seen.add(where)
                tp = (msg.topic, msg.partition)
                self._next[tp] = max(self._next.get(tp, 0), msg.offset + 1)
                new.append(
                    Record(
                        topic=msg.topic,
                        partition=msg.partition,
                        offset=msg.offset,
                        key=(msg.key or b"").decode(),
                        value=msg.value or b"",
                        headers={k: v.decode() for k, v in msg.headers or ()},
                    )
                )
        new.sort(key=lambda r: (r.topic, r.partition, r.offset))
        self._received(new)
        return new

    def _received(self, new: list[Record]) -> None:
        self.records.extend(new)

    async def wait_for(
        self, done: Callable[[], bool], *, timeout: float, what: str | Callable[[], str]
    ) -> None:
        """Read until ``done()`` holds; fail after ``timeout`` s saying ``what``."""

        async def check() -> bool:
            await self.fetch()
            return done()

        await wait_until(check, timeout=timeout, what=what, interval=0)

    async def drain(self, timeout: float = 30.0) -> None:
        """Read everything the broker holds now (for "exactly once" checks): up to the
        end offsets of every assigned partition, then until a fetch brings nothing new.

        The second condition is needed on Tansu 0.6 (memory storage): its ListOffsets
        answers the base offset of the last record batch + 1, not the log end offset, so
        the records after the first of the last batch lie beyond the reported end.
        """
        tps = list(self._consumer.assignment())
        ends: dict[Any, int] = await self._consumer.end_offsets(tps) if tps else {}

        def behind() -> dict[str, int]:
            return {
                f"{tp.topic}[{tp.partition}]": end - self._next.get((tp.topic, tp.partition), 0)
                for tp, end in ends.items()
                if self._next.get((tp.topic, tp.partition), 0) < end
            }

        async def caught_up() -> bool:
            new = await self.fetch()
            return not behind() and not new

        await wait_until(
            caught_up, timeout=timeout, what=lambda: f"read to the end: {behind()}", interval=0
        )


@dataclass(frozen=True)
class Event:
    """One decoded change event and where it was read."""

    topic: str
    partition: int
    offset: int
    key: str
    value: dict[str, Any]

    @property
    def op(self) -> str:
        return str(self.value["op"])

    @property
    def position(self) -> int:
        """The entity version: the Directus activity id (the head for snapshots)."""
        return int(self.value["source"]["position"])

    @property
    def entity_type(self) -> str:
        return str(self.value["entity_type"])

    @property
    def entity_id(self) -> str:
        return str(self.value["entity_id"])

    @property
    def after(self) -> dict[str, Any] | None:
        after = self.value["after"]
        return None if after is None else dict(after)

    @property
    def changed_fields(self) -> list[str]:
        return list(self.value["changed_fields"])

    def payload(self) -> dict[str, Any]:
        """The value without what differs per publish (event id and publish time)."""
        return {k: v for k, v in self.value.items() if k not in ("event_id", "occurred_at")}


class EventLog(KafkaLog):
    """The change events of every ``*.<source kind>.entity_changed`` topic, decoded by
    confluent-kafka's ``AvroDeserializer`` against the schema registry."""

    def __init__(self, bootstrap: str, registry_url: str, kind: str = "directus") -> None:
        super().__init__(bootstrap, rf"^.+\.{kind}\.entity_changed$")
        self.events: list[Event] = []
        self._deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))

    def _received(self, new: list[Record]) -> None:
        super()._received(new)
        for record in new:
            ctx = SerializationContext(record.topic, MessageField.VALUE)
            value = self._deserializer(record.value, ctx)
            assert isinstance(value, dict), f"{record.topic}@{record.offset}: {value!r}"
            self.events.append(
                Event(record.topic, record.partition, record.offset, record.key, value)
            )

    def changes(self, positions: Iterable[int] | None = None) -> list[Event]:
        """CREATE/UPDATE/DELETE events (not snapshots), those at ``positions`` if given."""
        wanted = None if positions is None else set(positions)
        return [
            e
            for e in self.events
            if e.op != "SNAPSHOT" and (wanted is None or e.position in wanted)
        ]

    async def wait_for_positions(self, positions: Iterable[int], *, timeout: float) -> None:
        """Read until a change event exists for every activity id in ``positions``."""
        wanted = set(positions)

        def missing() -> set[int]:
            return wanted - {e.position for e in self.changes(wanted)}

        await self.wait_for(
            lambda: not missing(),
            timeout=timeout,
            what=lambda: (
                f"events for activity ids {sorted(missing())[:20]} "
                f"({len(missing())} of {len(wanted)} missing)"
            ),
        )


# -- the domain ------------------------------------------------------------------------------


def expected_after(entity: EntitySpec, item: Mapping[str, Any]) -> dict[str, Any]:
    """The ``after`` record an item read from Directus must give, as Avro decodes it:
    decimals as :class:`~decimal.Decimal`, timestamps as UTC datetimes (Directus sends
    milliseconds, which ``timestamp-millis`` keeps exactly)."""
    after: dict[str, Any] = {}
    for name, spec in entity.fields.items():
        value = item.get(name)
        if value is not None and spec.type is FieldType.DECIMAL:
            value = Decimal(str(value))
        elif value is not None and spec.type is FieldType.TIMESTAMP:
            value = datetime.fromisoformat(str(value)).astimezone(UTC)
        after[name] = value
    return after


def entity_of(domain: DomainConfig, collection: str) -> tuple[str, EntitySpec]:
    """The entity type (name and spec) fed by ``collection``."""
    return next((n, e) for n, e in domain.entities.items() if e.collection == collection)


# -- Directus ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activity:
    """One row of Directus' activity log that changed an item."""

    id: int
    action: str
    collection: str
    item: str
    timestamp: datetime


class DirectusAdmin:
    """Directus' REST API as its admin: write items, read items and the activity log.

    Connections are not kept alive, so a restarted Directus is reached at once.
    """

    def __init__(self, api: DirectusClient, collections: Sequence[str]) -> None:
        self.api = api
        self.collections = list(collections)

    @classmethod
    async def login(
        cls,
        http: aiohttp.ClientSession,
        url: str,
        email: str,
        password: str,
        collections: Sequence[str],
    ) -> DirectusAdmin:
        return cls(await DirectusClient.login(http, url, email, password), collections)

    async def create(self, collection: str, data: Any) -> Any:
        """``POST /items/{collection}``: one item (a dict) or many (a list)."""
        return await self.api.request("POST", f"/items/{collection}", data)

    async def update(self, collection: str, item: object, patch: Mapping[str, Any]) -> Any:
        return await self.api.request("PATCH", f"/items/{collection}/{item}", dict(patch))

    async def delete(self, collection: str, item: object) -> None:
        await self.api.request("DELETE", f"/items/{collection}/{item}")

    async def item(self, collection: str, item: object) -> dict[str, Any]:
        return dict(await self.api.request("GET", f"/items/{collection}/{item}"))

    async def items(self, collection: str, ids: Iterable[object] | None = None) -> list[Any]:
        """Items of ``collection`` sorted by id: all, or those with ``ids``."""
        params = {"limit": "-1", "sort": "id", "fields": "*"}
        if ids is not None:
            params["filter"] = json.dumps({"id": {"_in": [str(i) for i in ids]}})
        return list(await self.api.request("GET", f"/items/{collection}", params=params))

    async def activity(self, after: int = 0) -> list[Activity]:
        """Item changes of the domain collections with id > ``after``, oldest first."""
        query = {
            "id": {"_gt": after},
            "collection": {"_in": self.collections},
            "action": {"_in": list(FEED_ACTIONS)},
        }
        rows = await self.api.request(
            "GET",
            "/activity",
            params={
                "filter": json.dumps(query),
                "sort": "id",
                "limit": "-1",
                "fields": "id,action,collection,item,timestamp",
            },
        )
        return [
            Activity(
                id=int(r["id"]),
                action=str(r["action"]),
                collection=str(r["collection"]),
                item=str(r["item"]),
                timestamp=datetime.fromisoformat(str(r["timestamp"])).astimezone(UTC),
            )
            for r in rows
        ]

    async def head(self) -> int:
        """The newest activity id that changed an item of the domain (0 if none)."""
        query = {"collection": {"_in": self.collections}, "action": {"_in": list(FEED_ACTIONS)}}
        rows = await self.api.request(
            "GET",
            "/activity",
            params={"filter": json.dumps(query), "sort": "-id", "limit": "1", "fields": "id"},
        )
        return int(rows[0]["id"]) if rows else 0


# -- workers ---------------------------------------------------------------------------------


@dataclass
class Metrics:
    """One scrape of a worker's ``/metrics``."""

    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Metrics:
        return cls(
            [
                (s.name, dict(s.labels), float(s.value))
                for family in text_string_to_metric_families(text)
                for s in family.samples
            ]
        )

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(
            v
            for n, have, v in self.samples
            if n == name and all(have.get(k) == want for k, want in labels.items())
        )


class MeshWorker:
    """One ``python -m mesh worker`` process of a fleet; restartable with the same name,
    state directory and port."""

    def __init__(
        self, name: str, *, app_id: str, state_dir: Path, log_dir: Path, env: Mapping[str, str]
    ) -> None:
        self.name = name
        self.app_id = app_id
        self.state_dir = state_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"worker-{app_id}-{name}.log"
        self.env = {
            **env,
            "MESH_APP_ID": app_id,
            "MESH_WORKER_NAME": name,
            "MESH_STATE_DIR": str(state_dir),
            "MESH_WEB_PORT": str(self.port),
        }
        self._proc: ManagedProcess | None = None
        self._log_from = 0
        """Where this run's lines start in the log (restarts append to it)."""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    async def start(self) -> None:
        """Start the process (not waiting for it to be ready)."""
        assert not self.running, f"{self.name} already runs"
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._proc = ManagedProcess(
            f"mesh worker {self.name}",
            [sys.executable, "-m", "mesh", "worker"],
            log_path=self.log_path,
            env=self.env,
        )
        await self._proc.start()

    async def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until ``/readyz`` answers 200 (joined the group, tables recovered)."""
        assert self._proc is not None

        async def ready() -> bool:
            return (await self._get("/readyz"))[0] == 200

        try:
            await self._proc.wait_ready(ready, timeout)
        except StackError as exc:
            errors = "\n".join(self.errors()[:5]) or "(none)"
            raise AssertionError(
                f"worker {self.name} is not ready; errors it logged:\n{errors}\n{exc}"
            ) from None

    def errors(self) -> list[str]:
        """The ERROR and CRITICAL lines this run of the worker logged."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_from)
            text = log.read().decode(errors="replace")
        return [line for line in text.splitlines() if re.search(r"\] \[(ERROR|CRITICAL)\] ", line)]

    async def kill(self) -> None:
        """SIGKILL: no shutdown of any kind (the process group, as a crash would)."""
        assert self._proc is not None
        await self._proc.kill()

    async def stop(self) -> None:
        """SIGTERM and wait for a clean exit (SIGKILL after 30 s)."""
        if self._proc is not None:
            await self._proc.stop(grace=30)

    async def metrics(self) -> Metrics:
        status, text = await self._get("/metrics")
        assert status == 200, f"{self.name} /metrics answered {status}: {text[:200]}"
        return Metrics.parse(text)

    async def source_state(self, source: str = "directus") -> int:
        """``dictamesh_source_state`` of ``source``: 0 not polled here, 1 snapshot,
        2 following, 3 backing off."""
        return int((await self.metrics()).value("dictamesh_source_state", source=source))

    def log_tail(self, lines: int = 30) -> str:
        return self._proc.log_tail(lines) if self._proc else "(not started)"

    async def _get(self, path: str) -> tuple[int, str]:
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(self.base + path) as resp,
        ):
            return resp.status, await resp.text()


async def states(workers: Sequence[MeshWorker], source: str = "directus") -> dict[str, int]:
    """The source's state on each running worker, by worker name."""
    return {w.name: await w.source_state(source) for w in workers if w.running}


async def wait_for_owner(
    workers: Sequence[MeshWorker], *, timeout: float = 90.0, source: str = "directus"
) -> MeshWorker:
    """Wait until exactly one worker polls ``source`` and follows its feed (state 2,
    the snapshot done); return it."""
    seen: dict[str, int] = {}

    async def one_follows() -> bool:
        nonlocal seen
        try:
            seen = await states(workers, source)
        except (aiohttp.ClientError, TimeoutError):
            return False
        active = [s for s in seen.values() if s != 0]
        return active == [2]

    await wait_until(
        one_follows,
        timeout=timeout,
        what=lambda: f"exactly one worker following source {source!r}; states {seen}",
        interval=0.25,
    )
    return next(w for w in workers if seen.get(w.name) == 2)


async def all_own_partitions(http: aiohttp.ClientSession, workers: list[MeshWorker]) -> bool:
    """True when every worker is ready and actively owns partitions (keys on each)."""
    for worker in workers:
        try:
            async with http.get(f"{worker.base}/readyz") as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200 or not body["active_partitions"]:
                    return False
        except (aiohttp.ClientError, TimeoutError):
            return False
    return True


async def start_following_fleet(
    cleanup: contextlib.AsyncExitStack,
    http: aiohttp.ClientSession,
    *,
    app_id: str,
    root: Path,
    names: Sequence[str],
    directus: DirectusHandle,
    registry_url: str,
    partitions: int,
    env: Mapping[str, str] | None = None,
) -> list[MeshWorker]:
    """A broker of their own and workers ``names`` following ``directus``: started (stopped
    by ``cleanup``), ready, one of them owning the source, and every one owning partitions.
    ``env`` adds to their environment (e.g. ``MESH_DATABASE_URL`` for the mirror)."""
    port = free_port()
    broker = await start_broker("127.0.0.1", port, root / "logs")
    cleanup.push_async_callback(broker.stop)
    env = {
        "MESH_BROKER_URL": f"kafka://127.0.0.1:{port}",
        "MESH_SCHEMA_REGISTRY_URL": registry_url,
        "MESH_DIRECTUS_URL": directus.url,
        "MESH_DIRECTUS_TOKEN": directus.service_token,
        "MESH_TOPIC_PARTITIONS": str(partitions),
        "MESH_REBALANCE_TIMEOUT_S": "3",
        "MESH_ROCKSDB_BLOCK_CACHE_MB": "8",
        **(env or {}),
    }
    workers = [
        MeshWorker(name, app_id=app_id, state_dir=root / name, log_dir=root / "logs", env=env)
        for name in names
    ]
    for worker in workers:
        await worker.start()
        cleanup.push_async_callback(worker.stop)
    await asyncio.gather(*(w.wait_ready() for w in workers))
    await wait_for_owner(workers)
    await wait_until(
        lambda: all_own_partitions(http, workers),
        timeout=90,
        what="every worker actively owning partitions",
        interval=0.25,
    )
    return workers
