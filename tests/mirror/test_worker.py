"""``mesh worker`` with ``MESH_DATABASE_URL`` set runs the mirror: events become rows."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path

import psycopg2

from tests.mirror.events import event
from tests.mirror.support import Scenario, wait_until


async def test_the_worker_mirrors_events_into_postgres(scenario: Scenario, tmp_path: Path) -> None:
    worker = await scenario.worker(tmp_path)
    await worker.start()
    try:
        await worker.wait_ready(timeout=60)
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
        answer = await worker.get("/metrics")
        assert answer.status == 200
        metrics = str(answer.body)
        assert "dictamesh_mirror_up 1.0" in metrics
        written = re.search(
            r'^dictamesh_mirror_rows_total\{entity_type="customer"\} (\S+)$', metrics, re.M
        )
        assert written is not None
        assert float(written.group(1)) >= 10
        # Not stop(): it signals the whole process group and SIGKILLs after a grace period;
        # the worker's own exit code on SIGTERM is what is checked here.
        proc = worker.proc
        assert proc is not None
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, worker.log_tail()
    finally:
        await worker.stop()
