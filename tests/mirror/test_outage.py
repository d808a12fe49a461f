"""Postgres away — before the mirror starts and while it runs: the worker's mirror neither
crashes nor skips anything, its lag grows, and it catches up once Postgres is back.

Uses a throwaway Postgres cluster of its own (stopped and restarted on the same port and
data directory), so the shared server is never disturbed.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from mesh_tooling.dev.postgres import ensure_database, start_throwaway_postgres
from mesh_tooling.dev.process import ManagedProcess, free_port
from prometheus_client import CollectorRegistry

from tests.mirror.events import event
from tests.mirror.support import Scenario, wait_until


async def test_the_mirror_waits_for_postgres_and_catches_up(
    broker: str, registry_url: str, session_dir: Path, tmp_path: Path
) -> None:
    pg_dir = session_dir / f"mirror-outage-{uuid.uuid4().hex[:6]}"
    pg_dir.mkdir()
    os.chmod(pg_dir, 0o755)  # the 'postgres' user must reach its data directory
    port = free_port()
    postgres: ManagedProcess = await start_throwaway_postgres("127.0.0.1", port, pg_dir)
    try:
        url = ensure_database(f"postgresql://postgres@127.0.0.1:{port}/postgres", "outage")
        scenario = Scenario(broker, registry_url, url, tmp_path)
        await scenario.create_topics()
        await postgres.stop()  # away before the mirror even starts

        metrics = CollectorRegistry()

        def value(name: str, **labels: str) -> float:
            return metrics.get_sample_value(name, labels) or 0.0

        def lag() -> float:
            return sum(
                value("dictamesh_mirror_lag", topic=scenario.domain.topic(t))
                for t in scenario.domain.entities
            )

        def describe() -> str:
            return (
                f"(lag {lag()}, up {value('dictamesh_mirror_up')}, "
                f"database errors {value('dictamesh_mirror_errors_total', kind='database')})"
            )

        mirror = scenario.mirror(metrics=metrics)
        await mirror.start()
        stopping = False
        task = asyncio.create_task(mirror.run(lambda: stopping))
        try:

            def invoices(ids: range, base: int) -> list[dict[str, object]]:
                return [event(scenario.domain, "invoice", i, base + i) for i in ids]

            await scenario.produce(invoices(range(1, 21), 0), one_by_one=True)
            await wait_until(
                lambda: (
                    lag() == 20 and value("dictamesh_mirror_errors_total", kind="database") >= 3
                ),
                state=describe,
                what="lag 20 while Postgres is down",
            )
            await scenario.produce(invoices(range(21, 31), 0), one_by_one=True)
            await wait_until(lambda: lag() == 30, state=describe, what="the lag grows")
            assert not task.done()
            assert value("dictamesh_mirror_up") == 0

            postgres = await start_throwaway_postgres("127.0.0.1", port, pg_dir)
            await wait_until(
                lambda: lag() == 0 and value("dictamesh_mirror_up") == 1,
                state=describe,
                what="caught up",
            )
            assert sorted(scenario.rows("invoice")) == list(range(1, 31))

            await postgres.stop()  # away while the mirror holds an open connection
            await scenario.produce(invoices(range(1, 6), 100), one_by_one=True)
            await wait_until(
                lambda: lag() == 5 and value("dictamesh_mirror_up") == 0,
                state=describe,
                what="lag 5 after Postgres went away",
            )
            assert not task.done()
            postgres = await start_throwaway_postgres("127.0.0.1", port, pg_dir)
            await wait_until(
                lambda: lag() == 0 and value("dictamesh_mirror_up") == 1,
                state=describe,
                what="caught up again",
            )
            rows = scenario.rows("invoice")
            assert [rows[i]["version"] for i in range(1, 7)] == [101, 102, 103, 104, 105, 6]
        finally:
            stopping = True
            await asyncio.wait_for(task, 10)
            await mirror.stop()
    finally:
        await postgres.stop()
