"""The mirror's own Kafka consumer: entity topics in, Postgres rows and dead letters out.

It runs in its own consumer group (``<app_id>-mirror``) so its position is its own: a
slow or absent Postgres never holds back Faust's tables, and the mirror catches up when
Postgres is back. Per batch (at-least-once, made effectively-once by the version guard):

1. **fetch**: decode every record (undecodable → dead letter, stage ``mirror-decode``) and
   collapse the rows to those that decide each key's state;
2. **store**: upsert them in one Postgres transaction, retried with backoff while Postgres
   is down (rows Postgres rejects → dead letters, stage ``mirror-write``); send the dead
   letters and wait for Kafka's acknowledgements; only then commit the batch's offsets.

:meth:`MirrorConsumer.run` overlaps the two: batch N+1 is fetched and decoded (Python)
while batch N is written (Postgres), and N+1 is stored only after N is committed. A failure
rewinds the consumer to the oldest uncommitted batch, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mesh.errors import RegistryError
from mesh.mirror.deadletters import send_dead_letters
from mesh.mirror.decode import DeadLetter, MirrorDecoder
from mesh.mirror.errors import MirrorDatabaseError
from mesh.mirror.lag import LagReporter
from mesh.mirror.metrics import MirrorMetrics
from mesh.mirror.rows import MirrorRow, collapse
from mesh.mirror.writer import MirrorWriter
from mesh.observability.slo import SloMetrics
from mesh.observability.tracing import BatchSpan
from mesh.retry import RetryPolicy
from mesh.runtime.kafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    KafkaConnection,
    KafkaError,
    TopicPartition,
)

__all__ = ["MirrorConsumer"]

log = logging.getLogger(__name__)

StopCheck = Callable[[], bool]

_YIELD_EVERY = 500
"""Records decoded between two yields to the event loop (~10 ms of work)."""


@dataclass(eq=False)  # identity: batches are removed from the in-flight list by identity
class _Batch:
    """A fetched and decoded batch, until its offsets are committed."""

    records: list[Any]
    firsts: dict[TopicPartition, int]
    rows: list[MirrorRow] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)


class MirrorConsumer:
    """Consumes the entity topics into Postgres; ``writer=None`` consumes without writing
    (the baseline of :mod:`mesh_tooling.bench.mirror`)."""

    def __init__(
        self,
        *,
        kafka: KafkaConnection,
        group_id: str,
        decoder: MirrorDecoder,
        writer: MirrorWriter | None,
        metrics: MirrorMetrics,
        dead_letter_topic: str,
        retry: RetryPolicy | None = None,
        max_batch: int = 5000,
        rebalance_timeout_s: float = 10.0,
        lag_interval_s: float = 1.0,
        slo: SloMetrics | None = None,
    ) -> None:
        self.kafka = kafka
        self.slo = slo
        """Where the freshness of written changes is observed (the worker's)."""
        self.group_id = group_id
        self.decoder = decoder
        self.writer = writer
        self.metrics = metrics
        self.dead_letter_topic = dead_letter_topic
        self.retry = retry or RetryPolicy(0.2, 30.0)
        self.max_batch = max_batch
        self.rebalance_timeout_s = rebalance_timeout_s
        self.lag_interval_s = lag_interval_s
        self.applied = 0
        """Records applied and committed since the start (dead letters included)."""
        self.applied_at = 0.0
        """``time.perf_counter()`` when the last batch was committed."""
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.lag: LagReporter | None = None
        self._in_flight: list[_Batch] = []
        self._stopping = False

    async def start(self) -> None:
        """Join the group, open the dead-letter producer and start reporting lag."""
        timeout_ms = int(self.rebalance_timeout_s * 1000)
        self.consumer = self.kafka.consumer(
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=timeout_ms,
            rebalance_timeout_ms=timeout_ms,
            heartbeat_interval_ms=max(100, min(3000, timeout_ms // 3)),
            metadata_max_age_ms=30_000,  # notice entity topics created after the start
        )
        self.consumer.subscribe(self.decoder.topics)
        self.producer = self.kafka.producer(acks="all", linger_ms=5)
        self.lag = LagReporter(
            self.consumer,
            self.kafka,
            self.decoder.topics,
            self.metrics.lag,
            lambda: [batch.firsts for batch in self._in_flight],
            None if self.slo is None else self.slo.partition_lag("mirror"),
        )
        await self.consumer.start()
        await self.producer.start()
        await self.lag.start(self.lag_interval_s)

    async def stop(self) -> None:
        """Stop reporting, leave the group and close everything (idempotent)."""
        self._stopping = True
        if self.lag is not None:
            await self.lag.stop()
            self.lag = None
        for client in (self.consumer, self.producer):
            if client is not None:
                await client.stop()
        self.consumer = None
        self.producer = None
        if self.writer is not None:
            await self.writer.close()

    async def update_lag(self) -> None:
        """Set ``dictamesh_mirror_lag`` now (it is also updated periodically)."""
        if self.lag is not None:
            await self.lag.update()

    async def step(self, *, timeout_ms: int = 500) -> int:
        """Fetch and store one batch; return how many records it had (0: none arrived)."""
        batch = await self._fetch(timeout_ms)
        if batch is None:
            return 0
        try:
            await self._store(batch, lambda: self._stopping)
        except BaseException:
            self._rewind(batch)
            raise
        finally:
            self._in_flight.remove(batch)
        return len(batch.records)

    async def run(self, should_stop: StopCheck) -> None:
        """Apply batches until ``should_stop()``, fetching the next while one is stored.

        Failures are counted, logged and retried after a backoff: the worker outlives them.
        """
        failures = 0
        storing: tuple[_Batch, asyncio.Task[None]] | None = None
        try:
            while not should_stop():
                fetched: _Batch | None = None
                error: Exception | None = None
                try:
                    fetched = await self._fetch(timeout_ms=500)
                except Exception as exc:  # rewound by _fetch
                    error = exc
                if storing is not None:
                    batch, task = storing
                    storing = None
                    try:
                        await task
                    except Exception as exc:
                        error = exc
                        if fetched is not None:  # the newer batch first: seeks to the older win
                            self._rewind(fetched)
                            self._in_flight.remove(fetched)
                            fetched = None
                        self._rewind(batch)
                    finally:
                        self._in_flight.remove(batch)
                if fetched is not None:
                    storing = (fetched, asyncio.create_task(self._store(fetched, should_stop)))
                    await asyncio.sleep(0)  # let it send its query before the next decoding
                if error is None:
                    failures = 0
                elif not should_stop():
                    await self._back_off(error, failures, should_stop)
                    failures += 1
            if storing is not None:  # stopping: let the batch being stored finish
                batch, task = storing
                storing = None
                try:
                    await task
                except Exception as exc:
                    log.info("postgres mirror: last batch not stored at stop (%s)", exc)
                finally:
                    self._in_flight.remove(batch)
        finally:
            if storing is not None:
                storing[1].cancel()  # uncommitted: fetched again after the restart
                await asyncio.gather(storing[1], return_exceptions=True)
                self._in_flight.remove(storing[0])

    async def _back_off(self, error: Exception, failures: int, should_stop: StopCheck) -> None:
        kind = "registry" if isinstance(error, RegistryError) else "internal"
        if isinstance(error, MirrorDatabaseError):
            kind = "database"
        self.metrics.errors.labels(kind).inc()
        delay = self.retry.delay(failures)
        log.warning("postgres mirror: batch failed, retrying in %.1f s", delay, exc_info=error)
        # should_stop is a plain callable, not an event: look at it in short slices.
        for _ in range(max(1, math.ceil(delay / 0.1))):
            if should_stop():
                return
            await asyncio.sleep(min(0.1, delay))

    async def _fetch(self, timeout_ms: int) -> _Batch | None:
        """Fetch, decode and collapse one batch (rewound again if that fails)."""
        assert self.consumer is not None, "start() first"
        parts = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_batch)
        records = [record for part in parts.values() for record in part]
        if not records:
            return None
        batch = _Batch(records, {tp: part[0].offset for tp, part in parts.items() if part})
        self._in_flight.append(batch)
        try:
            await self.decoder.prepare(records)
            rows: list[MirrorRow] = []
            for n, record in enumerate(records, 1):
                out = self.decoder.decode(record)
                if isinstance(out, MirrorRow):
                    rows.append(out)
                else:
                    batch.dead.append(out)
                if n % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # the worker's other agents share this loop
            batch.rows = collapse(rows)
        except BaseException:
            self._rewind(batch)
            self._in_flight.remove(batch)
            raise
        return batch

    async def _store(self, batch: _Batch, should_stop: StopCheck) -> None:
        """Write, dead-letter and commit one batch."""
        dead = list(batch.dead)
        span = BatchSpan.start("mirror upsert", batch.records, self.group_id)
        if self.writer is not None and batch.rows:
            writer, rows = self.writer, batch.rows
            with span.current():  # the Postgres spans (aiopg's instrumentation) go under it
                rejected = await self.retry.call(
                    lambda: writer.write(rows), on_retry=self._on_retry, should_stop=should_stop
                )
            self.metrics.up.set(1)
            refused = {id(r.row) for r in rejected}
            dead += [DeadLetter(r.row.origin, "mirror-write", r.error) for r in rejected]
            written = Counter(row.entity_type for row in rows if id(row) not in refused)
            for entity_type, count in written.items():
                self.metrics.rows.labels(entity_type).inc(count)
        if dead:
            assert self.producer is not None
            await send_dead_letters(self.producer, self.dead_letter_topic, dead, self.metrics)
        await self._commit(batch.records)
        self.applied += len(batch.records)
        self.applied_at = time.perf_counter()
        self.metrics.batch_seconds.observe(time.perf_counter() - batch.started)
        if self.slo is not None and self.writer is not None:
            times = [r.source_time for r in batch.rows if r.source_time is not None]
            with span.current():
                self.slo.fresh("mirror", times)
        span.end()

    def _on_retry(self, error: Exception, retry: int, delay: float) -> None:
        self.metrics.up.set(0)
        self.metrics.errors.labels("database").inc()
        log.warning("postgres mirror: %s; retry %d in %.1f s", error, retry, delay)

    async def _commit(self, records: list[Any]) -> None:
        assert self.consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # The group moved the partitions on (e.g. a long Postgres outage outlasted
            # max_poll_interval_ms): their new owner re-reads the batch from the last
            # commit and rewrites it, which the version guard makes harmless.
            log.warning("postgres mirror: offset commit failed (%s); records will be re-read", exc)

    def _rewind(self, batch: _Batch) -> None:
        """Seek back to the batch's first records, so they are fetched again."""
        if self.consumer is None:
            return
        for tp, offset in batch.firsts.items():
            # A partition no longer assigned raises: its new owner starts from the commit.
            with contextlib.suppress(KafkaError, AssertionError, RuntimeError):
                self.consumer.seek(tp, offset)
