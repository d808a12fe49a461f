"""SIGTERM in the middle of a stream (what Kubernetes sends before the grace period ends):
the worker stops polling, finishes the batch in flight, commits, flushes the mirror and
exits in time; its replacement carries on without losing or redoing a mirror batch."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import psycopg2
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition

from mesh.mirror.build import mirror_group
from tests.mirror.events import event
from tests.mirror.support import Scenario, wait_until
from tests.support.waiting import wait_until as poll_until

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 30_000


def grace_period_s() -> float:
    """The StatefulSet's ``terminationGracePeriodSeconds``: SIGKILL follows it."""
    statefulset = yaml.safe_load((ROOT / "deploy" / "base" / "statefulset.yaml").read_text())
    return float(statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


def count_rows(dsn: str, table: str) -> int:
    try:
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(f'SELECT count(*) FROM "{table}"')
            row = cur.fetchone()
            assert row is not None
            return int(row[0])
    except psycopg2.errors.UndefinedTable:  # created by the mirror's first write
        return 0


async def committed(broker: str, group: str, topic: str, partitions: int) -> int:
    """Sum of ``group``'s committed offsets on ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=group)
    await consumer.start()
    try:
        offsets = [await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        await consumer.stop()
    return sum(offset or 0 for offset in offsets)


async def test_sigterm_mid_stream_commits_what_it_wrote_and_exits_in_time(
    scenario: Scenario, tmp_path: Path
) -> None:
    worker = await scenario.worker(tmp_path)
    topic = scenario.domain.topic("customer")
    table = "customer"
    await worker.start()
    try:
        await worker.wait_ready(timeout=60)
        await scenario.produce(event(scenario.domain, "customer", i, 1) for i in range(EVENTS))
        await wait_until(
            lambda: count_rows(scenario.dsn, table) > 2_000,
            timeout=60,
            what="the mirror is writing",
            state=worker.log_tail,
        )
        proc = worker.proc
        assert proc is not None
        assert proc.pid is not None
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), grace_period_s())
        took = time.monotonic() - started
        print(f"graceful stop under load: exited {took:.2f} s after SIGTERM")
        assert code == 0, worker.log_tail()
        assert took < grace_period_s() / 2, f"stopped in {took:.1f} s"
        # (The domain's Directus source has no token here: its one error is expected.)
        assert [line for line in worker.errors() if "source directus" not in line] == []

        rows = count_rows(scenario.dsn, table)
        assert 0 < rows < EVENTS, "stopped mid-stream"
        # Every row written was committed, and nothing committed is missing: the batch in
        # flight was finished and committed, not abandoned.
        group = mirror_group(scenario.app_id)
        assert await committed(scenario.broker, group, topic, scenario.partitions) == rows
        folded = await committed(scenario.broker, scenario.app_id, topic, scenario.partitions)
        assert 0 < folded < EVENTS

        await worker.start()
        await worker.wait_ready(timeout=60)
        await wait_until(
            lambda: count_rows(scenario.dsn, table) == EVENTS,
            timeout=120,
            what="the restarted worker mirrored the rest",
            state=worker.log_tail,
        )

        async def catalogued() -> bool:
            answer = await worker.get("/api/v1/catalog/types")
            counts = {t["name"]: t["counts"]["live"] for t in answer.body["types"]}
            return bool(counts["customer"] == EVENTS)

        await poll_until(catalogued, timeout=60, what=worker.log_tail, interval=0.5)
        # The restarted catalog folded exactly what the stopped one had not committed:
        # nothing it finished was left unacknowledged, nothing was skipped.
        metrics = await worker.metrics()
        assert metrics.value("dictamesh_catalog_events_total", entity_type="customer") == (
            EVENTS - folded
        )
    finally:
        await worker.stop()
