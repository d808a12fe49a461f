"""The catalog ingestor: applies change events to the catalog tables in batches.

Faust's stream iteration costs a few asyncio tasks per event; this reads the subscribed
channel's queue directly and handles whatever has arrived as one batch, keeping what
Faust gives: partition assignment, acking and offset commits, changelogs, recovery and
standbys. Per batch:

1. decode each event and fold it into the record the table holds (version-guarded);
   undecodable events and events keyed by something other than their URN become dead
   letters, so a partition never stops;
2. apply each relation change to its index here when this worker owns the parent's
   partition, else send it to the relations topic for the owner;
3. send the relation indexes' changelogs, wait for their acks and the relations topic's,
   and only then send the entity records' changelogs: a record in a changelog is never
   ahead of the relation changes it implied (a replayed event that the recovered table
   already holds implies none);
4. only then make the cached reads of what the batch changed stale (:mod:`mesh.cache`),
   write the local RocksDB stores (and the changelog offsets they hold) and ack the
   events, so a crash at any point replays the batch and loses nothing.

On revocation the buffer is dropped, the batch being folded and those in flight are
finished, and their events are not acked: whoever owns the partitions next replays them,
which the version guard makes harmless.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from mesh.cache import changed_keys
from mesh.catalog import record
from mesh.catalog.fold import RelationOp, ReverseRelation, fold, member_entry, relation_ops
from mesh.catalog.metrics import CatalogMetrics
from mesh.codec import AvroEventCodec, RegistryClient
from mesh.codec.plain import epoch_seconds
from mesh.context import MeshContext
from mesh.deadletter import dead_letter_headers
from mesh.errors import CodecError, RegistryError
from mesh.logs import event_fields
from mesh.observability.tracing import BatchSpan
from mesh.runtime.delivery import MessageBuffer, Subscription
from mesh.runtime.kafka import AIOKafkaProducer, KafkaConnection
from mesh.runtime.partitioning import key_partition
from mesh.runtime.store import PartitionStore
from mesh.tables.catalog import member_key

log = logging.getLogger(__name__)

MAX_BATCH = 5000
BUFFER = 20_000
"""Messages fetched but not yet folded."""
IN_FLIGHT = 8
"""Batches sent but not yet acknowledged; bounds memory and replay after a crash."""


@dataclass
class _Flight:
    """A folded batch on its way: acked by Kafka, then stored and acked to Faust."""

    messages: list[Any]
    writes: dict[tuple[str, int], dict[bytes, bytes]]
    pending: list[Awaitable[Any]]
    """Relation changes and dead letters sent; the changelogs wait for them."""
    started: float
    source_times: list[float]
    """Source timestamps (Unix seconds) of the applied changes that have one: freshness."""
    span: BatchSpan


@functools.lru_cache(maxsize=65536)
def _partition_of(key: bytes, partitions: int) -> int:
    # murmur2 is pure Python in aiokafka; parents repeat across events, so remember them.
    return key_partition(key, partitions)


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
        self._child_relations = {
            t: [r for r in relations if r.child_type == t] for t in self.domain.entities
        }
        self.by_topic = self.domain.topic_types()
        self._subjects = {topic: f"{topic}-value" for topic in self.by_topic}
        self.relations_topic = relations_topic_name(context.settings.app_id)
        self.relation_tables = {r.name: context.catalog.relations[r.name] for r in relations}
        self._indexes = {table.name for table in self.relation_tables.values()}
        self.entity_tables = {t: context.catalog.entities[t] for t in self.domain.entities}
        self._stores = context.catalog.by_name()
        self.buffer = MessageBuffer({*self.by_topic, self.relations_topic}, BUFFER)
        self.subscription = Subscription(
            context.app, self.buffer.topics, context.settings.topic_partitions, self.buffer
        )
        self.producer: AIOKafkaProducer | None = None
        self._schemas: dict[int, dict[str, Any]] = {}
        # Values sent but not yet in RocksDB, per (table, partition): later batches read them.
        self._overlay: dict[tuple[str, int], dict[bytes, bytes]] = defaultdict(dict)
        self._inflight: asyncio.Queue[_Flight] = asyncio.Queue(maxsize=IN_FLIGHT)
        # Held while a batch is taken, folded and queued, so revocation sees all or none.
        self._folding = asyncio.Lock()
        self._revoking = False
        self._draining = False

    def subscribe(self) -> None:
        """Have the worker's consumer deliver the catalog topics to :attr:`buffer`."""
        self.subscription.install()

    async def start(self) -> None:
        """Open the producer the batches are written with."""
        self.producer = KafkaConnection.from_settings(self.context.settings).producer(
            acks="all",
            linger_ms=2,
            max_batch_size=512 * 1024,
        )
        await self.producer.start()

    async def stop(self) -> None:
        """Close the producer."""
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def run(self, should_stop: Any) -> None:
        """Handle batches until ``should_stop()``.

        Batches are pipelined: while Kafka acknowledges one batch, the next is folded
        (reading the values still in flight from :attr:`_overlay`). A committer task
        finishes batches strictly in order.
        """
        committer = asyncio.create_task(self._commit_forever())
        try:
            while not should_stop():
                await self.buffer.wait()
                if self._draining:
                    break
                async with self._folding:
                    batch = self.buffer.take(MAX_BATCH)
                    if not batch:
                        continue  # cleared by a revocation
                    self.metrics.batch_size.observe(len(batch))
                    flight = await self.apply(batch)
                    put = asyncio.ensure_future(self._inflight.put(flight))
                    await asyncio.wait({put, committer}, return_when=asyncio.FIRST_COMPLETED)
                if committer.done():
                    put.cancel()
                    committer.result()  # a failed commit stops the worker, loudly
        finally:
            # Finish the batches in flight, unless the committer itself failed (then they
            # stay unacknowledged, and are delivered again after the restart).
            joined = asyncio.ensure_future(self._inflight.join())
            await asyncio.wait({joined, committer}, return_when=asyncio.FIRST_COMPLETED)
            joined.cancel()
            committer.cancel()
            await asyncio.gather(joined, committer, return_exceptions=True)

    def drain(self) -> None:
        """Take no further batch: :meth:`run` returns once the batches in flight are
        committed and acknowledged (the worker is stopping; its consumer commits them)."""
        self._draining = True
        self.buffer.close()

    async def revoke(self) -> None:
        """Before partitions move: drop what is buffered, finish what is in flight.

        Finished batches are not acked: Faust has already forgotten the revoked
        partitions' offsets, and acks arriving now would linger in its commit state.
        """
        async with self._folding:
            self.buffer.clear()
            self._revoking = True
        try:
            await self._inflight.join()
        finally:
            self._revoking = False

    async def apply(self, messages: list[Any]) -> _Flight:
        """Fold one batch and send what it changed; the returned flight finishes it."""
        started = time.monotonic()
        writes: dict[tuple[str, int], dict[bytes, bytes]] = defaultdict(dict)
        dead: list[tuple[Any, str, Exception]] = []
        ops: list[RelationOp] = []
        counts: Counter[tuple[str, str, str]] = Counter()
        times: list[float] = []
        span = BatchSpan.start("catalog apply", messages, self.context.settings.app_id)
        for message in messages:
            if message.topic == self.relations_topic:
                self._fold_relation(message, writes, dead)
            else:
                self._fold_entity(message, writes, ops, dead, counts, times)
        for (entity_type, tenant, result), n in counts.items():
            self.metrics.events.labels(entity_type, tenant, result).inc(n)
        relation_records: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
        partitions = self.context.settings.topic_partitions
        # Nothing below awaits before the ops are applied: ownership holds for the loop.
        owned = {name: frozenset(table.owned()) for name, table in self.relation_tables.items()}
        for op in ops:
            key = op.parent.encode()
            partition = _partition_of(key, partitions)
            if partition in owned[op.relation]:
                # The parent's index is here: skip the round trip through the topic.
                table = self.relation_tables[op.relation]
                self._apply_relation_op(
                    table, partition, key, op.member, op.version, op.present, op.repair, writes
                )
            else:
                relation_records[partition].append((key, record.dumps(op.as_json())))
        pending = [await self._dead(message, stage, error) for message, stage, error in dead]
        sent = await self._send_batches(self.relations_topic, relation_records, span.headers())
        pending += [fut for *_, fut in sent]
        for table_partition, values in writes.items():
            self._overlay[table_partition].update(values)
        return _Flight(messages, dict(writes), pending, started, times, span)

    async def _commit_forever(self) -> None:
        while True:
            flight = await self._inflight.get()
            try:
                await self._commit(flight)
            finally:
                self._inflight.task_done()

    async def _commit(self, flight: _Flight) -> None:
        """Send the changelogs, relation indexes first (see the module docs), wait for
        every ack, then write the local stores and ack the events."""
        relation_writes = {tp: v for tp, v in flight.writes.items() if tp[0] in self._indexes}
        entity_writes = {tp: v for tp, v in flight.writes.items() if tp[0] not in self._indexes}
        last: dict[tuple[str, int], int] = {}
        for writes, before in ((relation_writes, flight.pending), (entity_writes, [])):
            changelogs = {
                (name, partition): await self._send_batches(
                    self._stores[name].changelog_topic,
                    {partition: list(values.items())},
                )
                for (name, partition), values in writes.items()
            }
            for fut in before:
                await fut
            for table_partition, batches in changelogs.items():
                for _, count, fut in batches:
                    metadata = await fut
                    offset = metadata.offset + count - 1
                    last[table_partition] = max(last.get(table_partition, -1), offset)
        cache = self.context.cache
        if cache is not None and cache.wants_invalidations():
            # Its in-process part runs last, and nothing awaits between it and the writes
            # below: no request can read the old value in between and store it as current.
            with flight.span.child("cache invalidate"):
                await cache.invalidate(changed_keys(flight.writes, self._indexes))
        for (name, partition), offset in last.items():
            values = flight.writes[(name, partition)]
            self._stores[name].write(partition, values, offset)
            overlay = self._overlay[(name, partition)]
            for key, value in values.items():
                if overlay.get(key) is value:  # not overwritten by a later batch
                    del overlay[key]
        if not self._revoking:
            self.subscription.ack(flight.messages)
        self.metrics.batch_seconds.observe(time.monotonic() - flight.started)
        with flight.span.current():
            self.context.slo.fresh("catalog", flight.source_times)
        flight.span.end()

    # -- folding -------------------------------------------------------------------------

    def _current(
        self,
        table: PartitionStore,
        partition: int,
        key: bytes,
        writes: dict[bytes, bytes],
    ) -> Any:
        if key in writes:
            return record.loads(writes[key])
        in_flight = self._overlay[(table.name, partition)].get(key)
        if in_flight is not None:
            return record.loads(in_flight)
        return record.loads(table.get(partition, key))

    def _fold_entity(
        self,
        message: Any,
        writes: dict[tuple[str, int], dict[bytes, bytes]],
        ops: list[RelationOp],
        dead: list[tuple[Any, str, Exception]],
        counts: Counter[tuple[str, str, str]],
        times: list[float],
    ) -> None:
        entity_type = self.by_topic[message.topic]
        table = self.entity_tables[entity_type]
        try:
            # Logical values (timestamps, decimals) come as the text the record stores.
            event = self.codecs[entity_type].loads_plain(message.value)
            schema = self._schema_info(message.value, self._subjects[message.topic])
        except (CodecError, RegistryError) as exc:
            dead.append((message, "catalog-decode", exc))
            return
        tenant = event["tenant"]
        urn = self.domain.urn(tenant, entity_type, event["entity_id"])
        refused = self._refusal(message, entity_type, event, urn)
        if refused is not None:
            dead.append((message, *refused))
            return
        name = table.name
        table_writes = writes[(name, message.partition)]
        before = self._current(table, message.partition, message.key, table_writes)
        after = fold(before, event, urn, schema)
        if after is None:
            counts[(entity_type, tenant, "stale")] += 1
            return
        table_writes[message.key] = record.dumps(after)
        relations = self._child_relations[entity_type]
        if relations:
            ops.extend(relation_ops(self.domain, relations, before, after))
        counts[(entity_type, tenant, "applied")] += 1
        changed_at = event["source"].get("timestamp")
        if changed_at is not None:
            # ISO 8601 text from loads_plain (a datetime from another writer schema).
            times.append(epoch_seconds(changed_at))

    def _refusal(
        self, message: Any, entity_type: str, event: dict[str, Any], urn: str
    ) -> tuple[str, CodecError] | None:
        """Why an event may not change the catalog (stage and error), or ``None``: its
        tenant is declared (and, with per-tenant topics, the topic's), its key is ``urn`` (its
        URN in that tenant), and its ``after`` record is of the entity it names."""
        tenant, entity_id = event["tenant"], event["entity_id"]

        def what() -> str:  # only for a refusal: this runs for every event
            return f"event for {event['entity_type']} {entity_id!r} on topic {message.topic}"

        if not self.domain.has_tenant(tenant):
            return "catalog-tenant", CodecError(
                f"{what()} is of tenant {tenant!r}, which the domain config does not declare "
                f"(declared: {self.domain.tenants}); add the tenant or fix the producer"
            )
        if self.domain.topic_per_tenant and message.topic != self.domain.topic(entity_type, tenant):
            return "catalog-tenant", CodecError(
                f"{what()} is of tenant {tenant!r} but on another tenant's topic; it belongs "
                f"on {self.domain.topic(entity_type, tenant)}"
            )
        if message.key != urn.encode() or event["entity_type"] != entity_type:
            return "catalog-key", CodecError(
                f"{what()} is keyed {message.key!r}; the key must be its URN {urn}"
            )
        after, key = event["after"], self.domain.entities[entity_type].key
        if after is not None and str(after.get(key)) != entity_id:
            return "catalog-key", CodecError(
                f"{what()} carries an after record whose {key} is {after.get(key)!r}: a record "
                "may only change the entity it names"
            )
        return None

    def _fold_relation(
        self,
        message: Any,
        writes: dict[tuple[str, int], dict[bytes, bytes]],
        dead: list[tuple[Any, str, Exception]],
    ) -> None:
        # Internal, but the relation check's repairs come this way too: never stop on one.
        try:
            op = self._relation_change(message.value)
        except CodecError as error:
            dead.append((message, "catalog-relation", error))
            return
        table = self.relation_tables[op["relation"]]
        self._apply_relation_op(
            table, message.partition, message.key, str(op["member"]), int(op["version"]),
            op["present"], bool(op.get("repair")), writes,
        )  # fmt: skip

    def _relation_change(self, value: bytes | None) -> dict[str, Any]:
        try:
            op = record.loads(value)
        except ValueError as exc:
            raise CodecError(f"a relation change must be JSON: {exc}") from None
        if not isinstance(op, dict) or op.get("relation") not in self.relation_tables:
            known = ", ".join(sorted(self.relation_tables))
            raise CodecError(f"not a change of a known relation ({known}): {value!r:.200}")
        version, member, present = op.get("version"), op.get("member"), op.get("present")
        if not (isinstance(version, int) and isinstance(member, str | int)
                and isinstance(present, bool)):  # fmt: skip
            raise CodecError(f"a relation change needs version, member and present: {op!r:.200}")
        return op

    def _apply_relation_op(
        self,
        table: PartitionStore,
        partition: int,
        key: bytes,
        member: str,
        version: int,
        present: bool,
        repair: bool,
        writes: dict[tuple[str, int], dict[bytes, bytes]],
    ) -> None:
        table_writes = writes[(table.name, partition)]
        mkey = member_key(key, member)
        current = self._current(table, partition, mkey, table_writes)
        if member_entry(current, version, present, repair) is not None:
            table_writes[mkey] = record.dumps_member(version, present)

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
        log.warning(
            "catalog: %s:%d@%d to the dead-letter topic (%s): %s",
            message.topic, message.partition, message.offset, stage, error,
            extra={"stage": stage, **event_fields(message.topic, message.partition,
                                                  message.offset, message.key)},
        )  # fmt: skip
        headers = dead_letter_headers(
            stage=stage,
            error=error,
            context={"topic": message.topic, "partition": message.partition,
                     "offset": message.offset},
            keep=getattr(message, "headers", None),  # a replay sends them back
        )  # fmt: skip
        assert self.producer is not None
        sent: Awaitable[Any] = await self.producer.send(
            self.dead_letter_topic, message.value, key=message.key, headers=headers
        )
        return sent

    async def _send_batches(
        self,
        topic: str,
        records: dict[int, list[tuple[bytes, bytes]]],
        headers: list[tuple[str, bytes]] | None = None,
    ) -> list[tuple[int, int, Awaitable[Any]]]:
        """Send ``records`` per partition as whole batches (cheaper than one send each),
        each record with ``headers``; returns ``(partition, records in batch, future)`` per
        batch sent."""
        producer = self.producer
        assert producer is not None
        extra = headers or []
        sent: list[tuple[int, int, Awaitable[Any]]] = []
        for partition, items in records.items():
            batch, count = producer.create_batch(), 0
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None, headers=extra) is None:
                    fut = await producer.send_batch(batch, topic, partition=partition)
                    sent.append((partition, count, fut))
                    batch, count = producer.create_batch(), 0
                    batch.append(key=key, value=value, timestamp=None, headers=extra)
                count += 1
            if count:
                fut = await producer.send_batch(batch, topic, partition=partition)
                sent.append((partition, count, fut))
        return sent
