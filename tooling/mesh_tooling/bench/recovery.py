"""``mesh bench recovery``: how fast a worker is back after a restart, with and without its
volume.

Self-contained like ``mesh bench ingest`` (its own broker, registry and worker, 8
partitions). One worker folds N invoice events into the catalog (N invoice records and N
relation members in the changelogs); then, in the same run:

* the ceiling: a raw aiokafka consumer reads every changelog partition from its start
  (the same fetch sizes as the restore, nothing written);
* the group join: the first worker's start to ready, its tables empty;
* kept volume: the worker stopped and started again on its state directory;
* rebuild: started on an empty state directory, the tables rebuilt from the changelogs
  by the batched restore (its records/s from the worker's own metrics, against the
  ceiling), with the worker's resident memory (now and at its peak);
* ``--replay``: the same rebuild by Faust's record-by-record replay, for comparison.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faust.types import TP

from mesh.runtime.end_offsets import read_end_offsets
from mesh.runtime.kafka import KafkaConnection
from mesh.runtime.restore import FETCH_BYTES
from mesh.settings import Settings
from mesh_tooling.bench.ingest import PARTITIONS, IngestBench, _du_mb, _metric, _rss_mb


class RecoveryBench(IngestBench):
    """One run: services, preload, ingest, ceiling, restarts."""

    def __init__(self, settings: Settings, entities: int, replay: bool) -> None:
        super().__init__(settings, entities)
        self.replay = replay

    async def _changelog_partitions(self) -> list[TopicPartition]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if t.endswith("-changelog")]
        finally:
            await admin.close()
        return [TopicPartition(t, p) for t in sorted(topics) for p in range(PARTITIONS)]

    async def _changelog_ceiling(self) -> float:
        """Raw consume of every changelog record; sets ``self.records``."""
        partitions = await self._changelog_partitions()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False,
            max_partition_fetch_bytes=FETCH_BYTES, fetch_max_bytes=4 * FETCH_BYTES,
        )  # fmt: skip
        await consumer.start()
        try:
            consumer.assign(partitions)
            # The dev broker's ListOffsets can fall short of the last batch: read the ends.
            listed = await consumer.end_offsets(partitions)
            ends = await read_end_offsets(
                KafkaConnection([self.bootstrap]),
                {TP(tp.topic, tp.partition): offset for tp, offset in listed.items()},
            )
            starts = await consumer.beginning_offsets(partitions)
            self.records: int = sum(
                ends[TP(tp.topic, tp.partition)] - starts[tp] for tp in partitions
            )
            await consumer.seek_to_beginning(*partitions)
            seen = 0
            started = time.monotonic()
            while seen < self.records:
                batch = await consumer.getmany(timeout_ms=1000, max_records=50_000)
                seen += sum(len(records) for records in batch.values())
            return self.records / (time.monotonic() - started)
        finally:
            await consumer.stop()

    async def _restored(self, port: int) -> tuple[float, float]:
        """The records the worker's batched restore wrote, and its seconds."""
        url = f"http://127.0.0.1:{port}/metrics"
        async with aiohttp.ClientSession() as http:
            records = await _metric(http, url, r"^dictamesh_worker_restored_records_total (\S+)$")
            seconds = await _metric(http, url, r"^dictamesh_worker_restore_seconds_total (\S+)$")
        return records, seconds

    async def run(self) -> dict[str, float]:
        f: dict[str, float] = {}
        try:
            await self._start_services()
            await self._preload()
            state = self.root / "worker"
            worker, port, f["join_s"] = await self._start_ready(state)
            print(f"  folding {self.count} events into the catalog…", flush=True)
            await self._fold(worker, port)
            await worker.stop()
            f["disk_mb"] = _du_mb(state)
            f["ceiling_per_s"] = await self._changelog_ceiling()
            f["records"] = self.records

            worker, port, f["kept_s"] = await self._start_ready(state)
            await worker.stop()

            shutil.rmtree(state)
            worker, port, f["rebuild_s"] = await self._start_ready(state)
            f["restored"], f["restore_s"] = await self._restored(port)
            assert worker.pid is not None
            f["rss_mb"] = _rss_mb(worker.pid)
            f["peak_rss_mb"] = _rss_mb(worker.pid, "VmHWM")
            await worker.stop()
            f["restore_per_s"] = f["restored"] / max(f["restore_s"], 1e-9)
            f["ratio"] = f["restore_per_s"] / f["ceiling_per_s"]

            if self.replay:
                shutil.rmtree(state)
                worker, _, f["replay_s"] = await self._start_ready(
                    state, MESH_RESTORE_BATCHED="false"
                )
                await worker.stop()
            return f
        finally:
            for proc in reversed(self.procs):
                await proc.stop()
            shutil.rmtree(self.root, ignore_errors=True)


def report(f: dict[str, Any]) -> list[str]:
    """The figures of one run as lines."""
    lines = [
        f"changelog records: {f['records']:,.0f}; state on disk: {f['disk_mb']:,.0f} MB",
        f"raw aiokafka consume of the changelogs (ceiling): {f['ceiling_per_s']:,.0f} records/s",
        f"group join (first start, empty tables): {f['join_s']:.1f} s",
        f"restart with the volume kept: ready in {f['kept_s']:.1f} s "
        f"({f['kept_s'] - f['join_s']:+.1f} s vs the join)",
        f"rebuild on an empty volume: ready in {f['rebuild_s']:.1f} s; batched restore "
        f"{f['restored']:,.0f} records in {f['restore_s']:.1f} s = "
        f"{f['restore_per_s']:,.0f} records/s",
        f"ratio restore / ceiling: {f['ratio']:.2f}",
        f"rebuilt worker resident memory: {f['rss_mb']:,.0f} MB (peak {f['peak_rss_mb']:,.0f} MB)",
    ]
    if "replay_s" in f:
        lines.append(
            f"rebuild by Faust's record-by-record replay: ready in {f['replay_s']:.1f} s "
            f"({f['replay_s'] / f['rebuild_s']:.1f} times the batched rebuild)"
        )
    return lines


def run_recovery(settings: Settings, entities: int, replay: bool) -> int:
    """``mesh bench recovery``: print the figures; return the exit code."""
    print(f"recovery: {entities} invoices, {PARTITIONS} partitions, one worker")
    figures = asyncio.run(RecoveryBench(settings, entities, replay).run())
    print("\n".join(report(figures)))
    return 0
