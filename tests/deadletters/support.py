"""Running ``mesh deadletters`` as an operator does (a process), and reading topics."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from tests.mirror.support import Scenario


@dataclass(frozen=True)
class Run:
    """What one command printed, and its exit code."""

    code: int
    out: str
    err: str


async def run_mesh(env: dict[str, str], *args: str) -> Run:
    """``mesh deadletters ARGS`` with ``env`` on top of this process's environment, stdin
    not a terminal."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh", "deadletters", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def mesh(scenario: Scenario, *args: str, env: dict[str, str] | None = None) -> Run:
    """``mesh deadletters ARGS`` against ``scenario``'s broker, registry and app id."""
    settings = {
        "MESH_BROKER_URL": f"kafka://{scenario.broker}",
        "MESH_SCHEMA_REGISTRY_URL": scenario.registry_url,
        "MESH_APP_ID": scenario.app_id,
        "MESH_TOPIC_PARTITIONS": "3",
    }
    return await run_mesh({**settings, **(env or {})}, *args)


async def end_offsets(broker: str, topic: str, partitions: int = 3) -> dict[int, int]:
    """The end offset of each partition of ``topic``, read through all records (Tansu's
    reported end offsets can fall short)."""
    return {p: len(await records(broker, topic, p)) for p in range(partitions)}


async def records(broker: str, topic: str, partition: int) -> list[ConsumerRecord]:
    """Every record of one partition of ``topic``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        found: list[ConsumerRecord] = []
        while batch := await consumer.getmany(tp, timeout_ms=500):
            found += batch.get(tp, [])
        return found
    finally:
        await consumer.stop()
