"""The catalog ingestor: applies change events to the catalog tables in batches.

Faust's stream iteration costs a few asyncio tasks per event; this reads the subscribed
channel's queue directly and handles whatever has arrived as one batch, keeping what
Faust gives: partition assignment, acking and offset commits, changelogs, recovery and
standbys. Per batch:

1. decode each event and fold it into the record the table holds (version-guarded);
   undecodable events and events keyed by something other than their URN become dead
   letters, so a partition never stops;
2. send the changed records to the tables' changelogs and the relation changes to the
   relations topic, and wait for Kafka's acknowledgements;
3. only then write the local RocksDB stores (and the changelog offsets they hold) and ack
   the events, so a crash at any point replays the batch and loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Awaitable
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from faust.types import TP

from mesh.catalog import record
from mesh.catalog.fold import RelationOp, ReverseRelation, apply_op, fold, relation_ops
from mesh.catalog.metrics import CatalogMetrics
from mesh.codec import AvroEventCodec, RegistryClient
from mesh.context import MeshContext
from mesh.deadletter import dead_letter_headers
from mesh.errors import CodecError, RegistryError
from tables.catalog import entity_table_name, relation_table_name

log = logging.getLogger(__name__)

MAX_BATCH = 5000


def relations_topic_name(app_id: str) -> str:
    """The topic carrying relation index changes, keyed by the parent's URN."""
    return f"{app_id}-catalog-relations"


class CatalogIngestor:
    """Folds the events of one worker's assigned partitions into the catalog tables."""

    def __init__(
        self,
        context: MeshContext,
        relations: list[ReverseRelation],
        codecs: dict[str, AvroEventCodec],
        registry: RegistryClient,
        dead_letter_topic: str,
        metrics: CatalogMetrics,
    ) -> None:
        self.context = context
        self.domain = context.domain
        self.codecs = codecs
        self.registry = registry
        self.metrics = metrics
        self.dead_letter_topic = dead_letter_topic
        self.relations = relations
        self.by_topic = {self.domain.topic(t): t for t in self.domain.entities}
        self.relations_topic = relations_topic_name(context.settings.app_id)
        self.relation_tables = {r.name: context.tables[relation_table_name(r)] for r in relations}
        self.entity_tables = {t: context.tables[entity_table_name(t)] for t in self.domain.entities}
        self.channel: faust.TopicT = context.app.topic(
            *self.by_topic,
            self.relations_topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=context.settings.topic_partitions,
            internal=True,  # Faust creates missing topics with the fleet's partition count
        )
        self.producer: AIOKafkaProducer | None = None
        self._schemas: dict[int, dict[str, Any]] = {}

    def subscribe(self) -> None:
        """Have Faust's consumer deliver the catalog topics to :attr:`channel`."""
        self.context.app.topics.add(self.channel)

    async def start(self) -> None:
        """Open the producer the batches are written with."""
        servers = self.context.settings.broker_url.removeprefix("kafka://")
        self.producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=2)
        await self.producer.start()

    async def stop(self) -> None:
        """Close the producer."""
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def run(self, should_stop: Any) -> None:
        """Handle batches until ``should_stop()``."""
        queue = self.channel.queue
        while not should_stop():
            first = await queue.get()
            batch = [first]
            while len(batch) < MAX_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            started = time.monotonic()
            await self.apply(batch)
            self.metrics.batch_seconds.observe(time.monotonic() - started)
            self.metrics.batch_size.observe(len(batch))

    async def apply(self, events: list[faust.EventT[Any]]) -> None:
        """Fold, publish, then store and ack one batch of events."""
        writes: dict[tuple[str, int], dict[bytes, bytes]] = defaultdict(dict)
        dead: list[tuple[Any, str, Exception]] = []
        ops: list[RelationOp] = []
        for event in events:
            message = event.message
            if message.topic == self.relations_topic:
                self._fold_relation(message, writes)
            else:
                self._fold_entity(message, writes, ops, dead)
        assert self.producer is not None
        pending = [
            await self.producer.send(
                self.relations_topic, record.dumps(op.as_json()), key=op.parent.encode()
            )
            for op in ops
        ]
        pending += [await self._dead(message, stage, error) for message, stage, error in dead]
        await self._publish(writes, pending)
        for event in events:
            event.ack()

    # -- folding -------------------------------------------------------------------------

    def _current(
        self,
        table: faust.Table[bytes, bytes],
        partition: int,
        key: bytes,
        writes: dict[bytes, bytes],
    ) -> Any:
        if key in writes:
            return record.loads(writes[key])
        return record.loads(_db(table, partition).get(key))

    def _fold_entity(
        self,
        message: Any,
        writes: dict[tuple[str, int], dict[bytes, bytes]],
        ops: list[RelationOp],
        dead: list[tuple[Any, str, Exception]],
    ) -> None:
        entity_type = self.by_topic[message.topic]
        table = self.entity_tables[entity_type]
        try:
            event = self.codecs[entity_type].loads(message.value)
            schema = self._schema_info(message.value, f"{message.topic}-value")
        except (CodecError, RegistryError) as exc:
            dead.append((message, "catalog-decode", exc))
            return
        urn = self.domain.urn(entity_type, event["entity_id"])
        if message.key != urn.encode() or event["entity_type"] != entity_type:
            error = CodecError(
                f"event for {event['entity_type']} {event['entity_id']!r} on topic "
                f"{message.topic} is keyed {message.key!r}; the key must be its URN {urn}"
            )
            dead.append((message, "catalog-key", error))
            return
        name = table.name
        table_writes = writes[(name, message.partition)]
        before = self._current(table, message.partition, message.key, table_writes)
        after = fold(before, event, urn, schema)
        if after is None:
            self.metrics.events.labels(entity_type, "stale").inc()
            return
        table_writes[message.key] = record.dumps(after)
        ops.extend(relation_ops(self.domain, self.relations, before, after))
        self.metrics.events.labels(entity_type, "applied").inc()

    def _fold_relation(
        self, message: Any, writes: dict[tuple[str, int], dict[bytes, bytes]]
    ) -> None:
        op = record.loads(message.value)
        table = self.relation_tables[op["relation"]]
        table_writes = writes[(table.name, message.partition)]
        index = apply_op(self._current(table, message.partition, message.key, table_writes), op)
        if index is not None:
            table_writes[message.key] = record.dumps(index)

    def _schema_info(self, value: bytes, subject: str) -> dict[str, Any]:
        schema_id = int.from_bytes(value[1:5], "big")
        info = self._schemas.get(schema_id)
        if info is None:
            found = self.registry.subject_version(schema_id, subject=subject)
            info = self._schemas[schema_id] = {
                "id": schema_id,
                "subject": found[0] if found else None,
                "version": found[1] if found else None,
            }
        return info

    # -- writing -------------------------------------------------------------------------

    async def _dead(self, message: Any, stage: str, error: Exception) -> Awaitable[Any]:
        self.metrics.dead_letters.labels(message.topic, stage).inc()
        headers = dead_letter_headers(
            stage=stage,
            error=error,
            context={"topic": message.topic, "partition": message.partition,
                     "offset": message.offset},
        )  # fmt: skip
        assert self.producer is not None
        sent: Awaitable[Any] = await self.producer.send(
            self.dead_letter_topic, message.value, key=message.key, headers=headers
        )
        return sent

    async def _publish(
        self, writes: dict[tuple[str, int], dict[bytes, bytes]], pending: list[Awaitable[Any]]
    ) -> None:
        assert self.producer is not None
        sends: list[tuple[str, int, Awaitable[Any]]] = []
        for (name, partition), values in writes.items():
            table = self.context.tables[name]
            changelog = table.changelog_topic.get_topic_name()
            for key, value in values.items():
                fut = await self.producer.send(changelog, value, key=key, partition=partition)
                sends.append((name, partition, fut))
        for fut in pending:
            await fut
        offsets: dict[tuple[str, int], int] = {}
        for name, partition, fut in sends:
            metadata = await fut
            offsets[(name, partition)] = max(offsets.get((name, partition), -1), metadata.offset)
        for (name, partition), values in writes.items():
            table = self.context.tables[name]
            db = _db(table, partition)
            for key, value in values.items():
                db.put(key, value)
            changelog = table.changelog_topic.get_topic_name()
            table.data.set_persisted_offset(TP(changelog, partition), offsets[(name, partition)])


def _db(table: faust.Table[bytes, bytes], partition: int) -> Any:
    """The RocksDB database of one table partition.

    Faust's store API resolves partitions from the event being processed; batches span
    events, so the partition's database is addressed directly.
    """
    return table.data._db_for_partition(partition)  # type: ignore[attr-defined]
