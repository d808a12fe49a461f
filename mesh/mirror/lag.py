"""``dictamesh_mirror_lag``: records of the entity topics not yet in Postgres."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import Gauge

from mesh.runtime.kafka import AIOKafkaConsumer, KafkaConnection, TopicPartition

__all__ = ["LagReporter"]

log = logging.getLogger(__name__)


class LagReporter:
    """Computes the lag per topic, summed over the partitions this consumer owns.

    A partition's mirror position is the first offset of the oldest batch still being
    applied (during a Postgres outage that batch is held and retried), else the consumer's
    position: everything before it is committed. End offsets come from a group-less client
    of their own: on the consumer's connection they would queue behind its fetch
    long-polls (half a second each).
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        kafka: KafkaConnection,
        topics: Iterable[str],
        gauge: Gauge,
        in_flight: Callable[[], Iterable[Mapping[TopicPartition, int]]],
        per_partition: dict[tuple[str, int], int] | None = None,
    ) -> None:
        """``in_flight()``: the first offset per partition of each batch being applied;
        ``per_partition`` is kept equal to the lag of each partition owned now."""
        self.consumer = consumer
        self.offsets = kafka.consumer(enable_auto_commit=False)
        self.topics = list(topics)
        self.gauge = gauge
        self.in_flight = in_flight
        self.per_partition = per_partition
        self._task: asyncio.Task[None] | None = None

    async def start(self, interval_s: float) -> None:
        """Report every ``interval_s`` seconds until :meth:`stop`."""
        await self.offsets.start()
        self._task = asyncio.create_task(self._forever(interval_s), name="mirror-lag")

    async def stop(self) -> None:
        """Stop reporting and close the end-offsets client."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.offsets.stop()

    async def update(self) -> None:
        """Set the gauge of every topic from the broker's end offsets now."""
        totals = dict.fromkeys(self.topics, 0)
        partitions: dict[tuple[str, int], int] = {}
        assigned = list(self.consumer.assignment())
        ends = await self.offsets.end_offsets(assigned) if assigned else {}
        for tp in assigned:
            firsts = [batch[tp] for batch in self.in_flight() if tp in batch]
            position = min(firsts) if firsts else await self.consumer.position(tp)
            # The high watermark of the last fetch as well: Tansu (the dev broker) answers
            # ListOffsets with the last record *batch*'s base offset + 1, which is low by
            # that batch's size; while fetching, the watermark is exact.
            end = max(ends[tp], self.consumer.highwater(tp) or 0)
            partitions[(tp.topic, tp.partition)] = max(0, end - position)
            totals[tp.topic] += partitions[(tp.topic, tp.partition)]
        for topic, lag in totals.items():
            self.gauge.labels(topic).set(lag)
        if self.per_partition is not None:
            self.per_partition.clear()
            self.per_partition.update(partitions)

    async def _forever(self, interval_s: float) -> None:
        while True:
            try:
                await self.update()
            except Exception as exc:  # a metric must never stop the mirror
                log.warning("postgres mirror: lag not updated: %r", exc)
            await asyncio.sleep(interval_s)
