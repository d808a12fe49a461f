"""Helpers for the end-to-end change-capture tests (``tests/sources/test_capture.py``).

They read what the workers publish, with nothing mocked (the workers themselves, Directus
and the waits are in :mod:`tests.support`):

- :class:`KafkaLog` reads every topic matching a pattern from the beginning (aiokafka);
  :class:`EventLog` decodes the ``*.directus.entity_changed`` topics with confluent-kafka's
  ``AvroDeserializer`` (an independent Confluent client, not our codec).
- :func:`expected_after` is what an item read from Directus must look like in an event's
  ``after`` record, derived here from the domain config (not from the adapter's mapping).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Self

from aiokafka import AIOKafkaConsumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from mesh.domain import EntitySpec, FieldType
from tests.support.waiting import wait_until

OPS = {"create": "CREATE", "update": "UPDATE", "delete": "DELETE"}
"""The op of the event an activity row yields while the item still exists."""


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
    headers: Mapping[str, str]

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
                Event(
                    record.topic, record.partition, record.offset, record.key, value, record.headers
                )
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
