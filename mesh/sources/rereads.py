"""Re-read requests: asking a source to read one item again (a dead letter's replay).

A change-capture dead letter has no record to send back: the item never became an event.
Replaying it (``mesh deadletters replay``) writes a request to the compacted topic
``<app_id>.source-rereads``, keyed ``<source>/<collection>/<item>`` (a newer request for the
same item replaces an older one). The worker polling the source picks it up between two
polls, reads the item's current state, publishes it with the letter's position as its
version, and then deletes the request (a tombstone). Requests live in Kafka until done, so
they survive restarts and follow the source when it moves to another worker; one carried
out twice (a worker stopped between publishing and the tombstone) is harmless, since the
catalog and the mirror keep only newer versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mesh.errors import CodecError
from mesh.runtime.kafka import AIOKafkaProducer, KafkaConnection, KafkaError, TopicPartition
from mesh.runtime.topic_admin import ensure_topic

log = logging.getLogger(__name__)

REREAD_PARTITIONS = 1
"""Requests are few and every worker reads them all: one partition keeps them in order."""
REREAD_TOPIC_CONFIG = {"cleanup.policy": "compact"}
RETRY_S = 10.0
"""Wait before reading the topic again after Kafka failed (or while it is missing)."""


def reread_topic(app_id: str) -> str:
    """The topic of an app's re-read requests."""
    return f"{app_id}.source-rereads"


@dataclass(frozen=True)
class RereadRequest:
    """Read ``item`` of ``collection`` again from ``source``."""

    source: str
    collection: str
    item: str
    position: int | None = None
    """The dead letter's source position: the version the item is published at."""
    letter: str | None = None
    """The dead letter it replays (``<topic>:<partition>:<offset>``), for the logs."""

    @property
    def key(self) -> bytes:
        """The request's Kafka key: one request per item."""
        return f"{self.source}/{self.collection}/{self.item}".encode()

    def dumps(self) -> bytes:
        """The request's Kafka value."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def loads(cls, value: bytes) -> RereadRequest:
        """The request in a Kafka value (:class:`~mesh.errors.CodecError` when not one)."""
        try:
            data: Any = json.loads(value)
            position = data.get("position")
            return cls(
                source=str(data["source"]),
                collection=str(data["collection"]),
                item=str(data["item"]),
                position=int(position) if position is not None else None,
                letter=data.get("letter"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CodecError(f"not a re-read request: {value[:200]!r} ({exc})") from None


class RereadInbox:
    """The fleet's pending re-read requests, read from the topic by a background task.

    Every worker reads every request (a handful; the topic has one partition); the
    runner of a source takes those of its source (:meth:`pending`) and, once it published
    the items, deletes them (:meth:`done`).
    """

    def __init__(
        self,
        kafka: KafkaConnection,
        topic: str,
        *,
        declare: bool,
        replication_factor: int = 1,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.declare = declare
        self.replication_factor = replication_factor
        self._pending: dict[bytes, RereadRequest] = {}
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None

    def start(self) -> None:
        """Start reading the topic in the background."""
        self._task = asyncio.create_task(self._read_forever(), name="source-rereads")

    async def stop(self) -> None:
        """Stop reading; close the producer of :meth:`done`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def pending(self, source: str) -> list[RereadRequest]:
        """The requests of ``source`` not done yet, oldest first."""
        return [r for r in self._pending.values() if r.source == source]

    async def done(self, requests: Sequence[RereadRequest]) -> None:
        """Delete ``requests`` from the topic (tombstones), once their items are published."""
        for request in requests:
            self._pending.pop(request.key, None)
        if self._producer is None:
            producer = self.kafka.producer(acks="all")
            await producer.start()
            self._producer = producer
        sent = [await self._producer.send(self.topic, None, key=r.key) for r in requests]
        await asyncio.gather(*sent)

    def take(self, key: bytes | None, value: bytes | None) -> None:
        """Fold one record of the topic: a request, or a tombstone deleting one."""
        if key is None:
            return
        if value is None:
            self._pending.pop(key, None)
            return
        try:
            self._pending[key] = RereadRequest.loads(value)
        except CodecError as exc:
            log.warning("%s: %s; ignored", self.topic, exc)

    async def _read_forever(self) -> None:
        warned = False
        while True:
            try:
                if await ensure_topic(
                    self.kafka,
                    self.topic,
                    partitions=REREAD_PARTITIONS,
                    config=REREAD_TOPIC_CONFIG,
                    declare=self.declare,
                    replication_factor=self.replication_factor,
                ):
                    await self._read()
                elif not warned:
                    warned = True
                    log.warning(
                        "topic %s does not exist and MESH_TOPIC_DECLARE is false: create it "
                        "(`mesh topics` lists it) for dead-letter replays to reach sources",
                        self.topic,
                    )
            except (KafkaError, OSError) as exc:
                log.warning("reading %s failed (%s); again in %.0f s", self.topic, exc, RETRY_S)
            await asyncio.sleep(RETRY_S)

    async def _read(self) -> None:
        consumer = self.kafka.consumer(enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(REREAD_PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self._pending.clear()  # read again from the start: the topic says what is left
            while True:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for record in records:
                        self.take(record.key, record.value)
        finally:
            await consumer.stop()
