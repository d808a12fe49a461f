"""Reading the dead-letter topic without a consumer group: partitions are assigned by hand
and no offset is ever committed, so reading disturbs no one (the topic has no consumer
group of the fleet's anyway, and an operator's read must not become one)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

from mesh.deadletters.errors import DeadLetterToolError
from mesh.deadletters.letters import Letter, LetterRef
from mesh.runtime.kafka import AIOKafkaConsumer, KafkaConnection, KafkaError, TopicPartition

Progress = Callable[[int, int], None]
"""Called now and then during a long read with (records read, records to read)."""

TAIL_WAIT_MS = 300
"""How long a fetch at a reported end offset waits for records beyond it (see
:meth:`DeadLetterReader.bounds`)."""
PROGRESS_EVERY_S = 1.0
STALL_S = 30.0
"""A read that gets nothing for this long, short of the end offsets, gives up."""


def unreachable(kafka: KafkaConnection, error: BaseException) -> DeadLetterToolError:
    """The error saying the brokers could not be reached, and what to check."""
    said = str(error)
    name = type(error).__name__
    why = said if said.startswith(name) else f"{name}: {said}"
    return DeadLetterToolError(
        f"cannot reach the Kafka brokers at {', '.join(kafka.bootstrap_servers)} ({why}); "
        "check MESH_BROKER_URL (and the MESH_KAFKA_* TLS/SASL settings) and that Kafka runs"
    )


class DeadLetterReader:
    """Reads one dead-letter topic; use as ``async with``."""

    def __init__(self, kafka: KafkaConnection, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.partitions: list[int] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> DeadLetterReader:
        consumer = self.kafka.consumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=15_000,
        )
        try:
            await consumer.start()
            self._consumer = consumer
            topics = await consumer.topics()
        except (KafkaError, OSError) as exc:
            await consumer.stop()
            raise unreachable(self.kafka, exc) from None
        if self.topic not in topics:
            await self.__aexit__(None, None, None)
            raise DeadLetterToolError(
                f"the dead-letter topic {self.topic} does not exist on "
                f"{', '.join(self.kafka.bootstrap_servers)}: no letter was ever written there, "
                "or MESH_APP_ID is not the fleet's (the topic is <MESH_APP_ID>.dead_letters)"
            )
        self.partitions = sorted(consumer.partitions_for_topic(self.topic) or ())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    @property
    def consumer(self) -> AIOKafkaConsumer:
        """The consumer (inside ``async with``)."""
        assert self._consumer is not None, "use DeadLetterReader inside `async with`"
        return self._consumer

    def _tps(self, partitions: list[int] | None = None) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in partitions or self.partitions]

    async def _kafka(self, what: str, call: Any) -> Any:
        try:
            return await call
        except KafkaError as exc:
            raise DeadLetterToolError(
                f"{what} of {self.topic} failed ({type(exc).__name__}: {exc}); "
                "is the broker healthy? try again"
            ) from None

    async def bounds(self, partitions: list[int] | None = None) -> dict[int, tuple[int, int]]:
        """``(first offset, end offset)`` per partition, as they are now.

        A broker may report an end offset short of the last record (Tansu reports the
        last batch's base offset + 1), so records found at the reported end move it.
        """
        tps = self._tps(partitions)
        consumer = self.consumer
        consumer.assign(tps)
        first = await self._kafka("reading the first offsets", consumer.beginning_offsets(tps))
        ends = await self._kafka("reading the end offsets", consumer.end_offsets(tps))
        end = {tp.partition: int(ends[tp]) for tp in tps}
        for tp in tps:
            consumer.seek(tp, end[tp.partition])
        while found := await consumer.getmany(*tps, timeout_ms=TAIL_WAIT_MS):
            for tp, records in found.items():
                if records:
                    end[tp.partition] = max(end[tp.partition], records[-1].offset + 1)
        return {tp.partition: (int(first[tp]), end[tp.partition]) for tp in tps}

    async def offsets_since(self, timestamp_ms: int, ends: dict[int, int]) -> dict[int, int]:
        """Per partition, the first offset written at or after ``timestamp_ms`` (the end
        when none was); ``{}`` when the broker cannot say (then read from the start)."""
        tps = self._tps(list(ends))
        try:
            found = await self.consumer.offsets_for_times(dict.fromkeys(tps, timestamp_ms))
        except (KafkaError, ValueError):
            return {}
        return {
            tp.partition: ends[tp.partition] if found.get(tp) is None else int(found[tp].offset)
            for tp in tps
        }

    async def scan(
        self,
        start: dict[int, int],
        end: dict[int, int],
        progress: Progress | None = None,
    ) -> AsyncIterator[Letter]:
        """Every letter from ``start`` up to (not including) ``end``, per partition."""
        consumer = self.consumer
        todo = {p: (s, e) for p, s in start.items() if (e := end.get(p, 0)) > s}
        total = sum(e - s for s, e in todo.values())
        tps = self._tps(list(todo))
        if not tps:
            return
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, todo[tp.partition][0])
        pending, done = set(tps), 0
        started = last = moved = time.monotonic()
        while pending:
            found = await self._kafka(
                "reading", consumer.getmany(*pending, timeout_ms=1000, max_records=2000)
            )
            if any(found.values()):
                moved = time.monotonic()
            elif time.monotonic() - moved > STALL_S:
                raise DeadLetterToolError(
                    f"reading {self.topic} stalled: nothing arrived for {STALL_S:.0f} s before "
                    "the end offsets; is the broker healthy? try again"
                )
            for tp, records in found.items():
                stop = todo[tp.partition][1]
                for record in records:
                    if record.offset >= stop:
                        break
                    done += 1
                    yield Letter.from_record(record)
            for tp in list(pending):
                if await consumer.position(tp) >= todo[tp.partition][1]:
                    pending.discard(tp)
                    consumer.pause(tp)
            now = time.monotonic()
            if progress is not None and now - started > 2 and now - last > PROGRESS_EVERY_S:
                last = now
                progress(done, total)

    async def fetch(self, ref: LetterRef) -> Letter:
        """The letter ``ref`` names (its partition found when ``ref`` names none)."""
        partition = await self._partition_of(ref)
        tp = TopicPartition(self.topic, partition)
        consumer = self.consumer
        consumer.assign([tp])
        consumer.seek(tp, ref.offset)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = await self._kafka("reading", consumer.getmany(tp, timeout_ms=500))
            for record in found.get(tp, []):
                if record.offset == ref.offset:
                    return Letter.from_record(record)
                if record.offset > ref.offset:
                    break
            else:
                continue
            break
        raise DeadLetterToolError(
            f"no letter at offset {ref.offset} of {self.topic} partition {partition} "
            "(removed by compaction?); list the letters with `mesh deadletters list`"
        )

    async def _partition_of(self, ref: LetterRef) -> int:
        if ref.partition is not None and ref.partition not in self.partitions:
            raise DeadLetterToolError(
                f"{self.topic} has no partition {ref.partition} (it has "
                f"{len(self.partitions)}: 0 to {len(self.partitions) - 1})"
            )
        partitions = [ref.partition] if ref.partition is not None else self.partitions
        bounds = await self.bounds(partitions)
        holding = [p for p, (first, end) in bounds.items() if first <= ref.offset < end]
        if len(holding) == 1:
            return holding[0]
        if not holding:
            held = ", ".join(
                f"partition {p}: " + (f"{first} to {end - 1}" if end > first else "empty")
                for p, (first, end) in sorted(bounds.items())
            )
            raise DeadLetterToolError(
                f"offset {ref.offset} is not in {self.topic} ({held}); older letters are "
                "deleted by the topic's retention. List them with `mesh deadletters list`"
            )
        raise DeadLetterToolError(
            f"offset {ref.offset} is in several partitions of {self.topic} "
            f"({', '.join(map(str, holding))}): name one as PARTITION:OFFSET "
            f"(e.g. {holding[0]}:{ref.offset}) or with --partition"
        )
