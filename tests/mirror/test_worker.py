"""``mesh worker`` with ``MESH_DATABASE_URL`` set runs the mirror: events become rows."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import psycopg2
import yaml
from mesh_tooling.dev.process import ManagedProcess, free_port

from tests.mirror.events import event
from tests.mirror.support import Scenario, domain_data, own_topics, wait_until


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def test_the_worker_mirrors_events_into_postgres(scenario: Scenario, tmp_path: Path) -> None:
    data = domain_data()
    own_topics(data, scenario.suffix)  # suffixes the collections in `data` as well
    config = tmp_path / "domain.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))  # field order matters
    await scenario.create_topics()
    port = free_port()
    worker = ManagedProcess(
        "worker",
        [sys.executable, "-m", "mesh", "worker"],
        log_path=tmp_path / "worker.log",
        env={
            "MESH_BROKER_URL": f"kafka://{scenario.broker}",
            "MESH_SCHEMA_REGISTRY_URL": scenario.registry_url,
            "MESH_DATABASE_URL": scenario.dsn,
            "MESH_APP_ID": scenario.app_id,
            "MESH_DOMAIN_CONFIG": str(config),
            "MESH_SCHEMAS_DIR": str(scenario.schemas_dir(scenario.domain)),
            "MESH_STATE_DIR": str(tmp_path / "state"),
            "MESH_ROCKSDB_BLOCK_CACHE_MB": "8",
            "MESH_TOPIC_PARTITIONS": str(scenario.partitions),
            "MESH_WEB_PORT": str(port),
            "MESH_REBALANCE_TIMEOUT_S": "2",
        },
    )
    await worker.start()
    try:
        base = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            return (await _get(f"{base}/readyz"))[0] == 200

        await worker.wait_ready(ready, timeout=60)
        events = [event(scenario.domain, "customer", i, i) for i in range(1, 11)]
        events.append(event(scenario.domain, "customer", 3, 50, op="DELETE"))
        await scenario.produce(events)

        def mirrored() -> bool:
            try:
                rows = scenario.rows("customer")
            except psycopg2.errors.UndefinedTable:  # created by the mirror's first write
                return False
            return len(rows) == 10 and bool(rows[3]["deleted"])

        await wait_until(
            mirrored,
            timeout=60,
            what="the worker's mirror wrote the events",
            state=worker.log_tail,
        )
        status, metrics = await _get(f"{base}/metrics")
        assert status == 200
        assert "dictamesh_mirror_up 1.0" in metrics
        written = re.search(
            r'^dictamesh_mirror_rows_total\{entity_type="customer"\} (\S+)$', metrics, re.M
        )
        assert written is not None
        assert float(written.group(1)) >= 10
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 30) == 0, worker.log_tail()
    finally:
        await worker.stop()
