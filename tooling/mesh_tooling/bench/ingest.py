"""``mesh bench ingest``: how fast one worker materialises change events into the catalog.

Self-contained: starts its own broker, schema registry and worker under a scratch
directory. It pre-loads N change events, measures in the same run

* the ceiling: raw aiokafka consume → produce of the same messages on the same broker;
* the catalog: events/s one worker folds into its tables (entity records + relation
  indexes), from its first applied event to its last;

and reports their ratio, the worker's resident memory and disk use, and how long a new
worker takes to recover the tables from their changelogs.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from mesh.codec import RegistryClient, build_codecs
from mesh.domain import DomainConfig, load_domain
from mesh.errors import StackError
from mesh.schemas import load_event_schemas
from mesh.settings import Settings
from mesh_tooling.dev.broker import start_broker
from mesh_tooling.dev.process import ManagedProcess, free_port

PARTITIONS = 8


def _events(domain: DomainConfig, count: int) -> list[tuple[str, bytes, dict[str, Any]]]:
    """``count`` events: invoices spread over customers (so relation indexes work too)."""
    now = datetime.now(UTC)
    out = []
    for n in range(count):
        entity_id = str(n + 1)
        out.append(
            (
                "invoice",
                domain.urn(domain.tenants[0], "invoice", entity_id).encode(),
                {
                    "event_id": str(uuid.UUID(int=n)),
                    "tenant": domain.tenants[0],
                    "entity_type": "invoice",
                    "entity_id": entity_id,
                    "op": "CREATE",
                    "source": {"system": "bench", "instance": "bench", "collection": "invoices",
                               "position": n + 1, "timestamp": now},
                    "occurred_at": now,
                    "changed_fields": [],
                    "after": {"id": n + 1, "number": f"INV-{n + 1:08d}", "customer": n % 5000 + 1,
                              "status": "open", "issued_at": now, "total": Decimal("123.45"),
                              "date_created": now, "date_updated": None},
                },
            )
        )  # fmt: skip
    return out


async def _metric(http: aiohttp.ClientSession, url: str, pattern: str) -> float:
    async with http.get(url) as resp:
        text = await resp.text()
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of the process ``pid`` (the worker is one), now or at its peak
    (``field="VmHWM"``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1024 / 1024


class IngestBench:
    """One run: services, preload, ceiling, catalog, recovery."""

    def __init__(self, settings: Settings, events: int) -> None:
        self.settings = settings
        self.count = events
        self.domain = load_domain(settings.domain_config)
        self.topic = self.domain.topic("invoice")
        self.root = Path(tempfile.mkdtemp(prefix="dictamesh-bench-"))
        os.chmod(self.root, 0o755)
        self.procs: list[ManagedProcess] = []

    async def _start_services(self) -> None:
        port = free_port()
        self.procs.append(await start_broker("127.0.0.1", port, self.root / "logs"))
        self.bootstrap = f"127.0.0.1:{port}"
        reg_port = free_port()
        registry = ManagedProcess(
            "registry",
            [sys.executable, "-m", "mesh", "registry", "--port", str(reg_port),
             "--data", str(self.root / "registry.db")],
            log_path=self.root / "logs" / "registry.log",
        )  # fmt: skip
        await registry.start()
        self.procs.append(registry)
        self.registry_url = f"http://127.0.0.1:{reg_port}"

        async def ok() -> bool:
            async with aiohttp.ClientSession() as http, http.get(self.registry_url) as r:
                return r.status == 200

        await registry.wait_ready(ok, timeout=30)

    async def _preload(self) -> float:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        topics = [self.topic, "bench-ceiling-out"]
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
        await admin.close()
        schemas = load_event_schemas(self.domain, self.settings.schemas_dir)
        codec = build_codecs(self.domain, schemas, RegistryClient(self.registry_url))["invoice"]
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=5, max_batch_size=256 * 1024
        )
        await producer.start()
        started = time.monotonic()
        pending = []
        for n, (_, key, event) in enumerate(_events(self.domain, self.count)):
            pending.append(await producer.send(self.topic, codec.dumps(event), key=key))
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
                print(f"\r  preloading: {n + 1}/{self.count}", end="", flush=True)
        await asyncio.gather(*pending)
        await producer.stop()
        print()
        return self.count / (time.monotonic() - started)

    async def _ceiling(self) -> float:
        """Raw aiokafka consume → produce of the preloaded messages."""
        consumer = AIOKafkaConsumer(
            self.topic, bootstrap_servers=self.bootstrap, group_id=f"bench-{uuid.uuid4().hex}",
            auto_offset_reset="earliest", max_poll_records=5000,
        )  # fmt: skip
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        await consumer.start()
        await producer.start()
        seen = 0
        started: float | None = None
        pending = []
        while seen < self.count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                if started is None:
                    started = time.monotonic()
                for msg in records:
                    pending.append(await producer.send("bench-ceiling-out", msg.value, key=msg.key))
                seen += len(records)
            if len(pending) > 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        elapsed = time.monotonic() - (started or time.monotonic())
        await consumer.stop()
        await producer.stop()
        return self.count / elapsed

    def _worker(self, state: Path, port: int, **env: str) -> ManagedProcess:
        """A worker process (not started) on ``state``; ``env`` adds settings."""
        env = {
            "MESH_BROKER_URL": f"kafka://{self.bootstrap}",
            "MESH_SCHEMA_REGISTRY_URL": self.registry_url,
            "MESH_STATE_DIR": str(state),
            "MESH_WEB_PORT": str(port),
            "MESH_APP_ID": "bench",
            "MESH_TOPIC_PARTITIONS": str(PARTITIONS),
            "MESH_REBALANCE_TIMEOUT_S": "3",
            "MESH_LOG_LEVEL": "warning",
            "MESH_DIRECTUS_TOKEN": "unused",
            "MESH_DIRECTUS_URL": "http://127.0.0.1:9",
            # The benches measure the data path; requests are not authenticated here.
            "MESH_AUTH": "off",
            **env,
        }
        return ManagedProcess(
            "worker", [sys.executable, "-m", "mesh", "worker"],
            log_path=self.root / "logs" / f"worker-{port}.log", env=env,
        )  # fmt: skip

    async def _start_ready(self, state: Path, **env: str) -> tuple[ManagedProcess, int, float]:
        """Start a worker on ``state``; return it, its web port and the seconds it took
        to report ready (tables recovered, partitions assigned)."""
        port = free_port()
        worker = self._worker(state, port, **env)
        started = time.monotonic()
        await worker.start()
        self.procs.append(worker)

        async def ready() -> bool:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{port}/readyz") as resp,
            ):
                return resp.status == 200

        await worker.wait_ready(ready, timeout=3600)
        return worker, port, time.monotonic() - started

    async def _fold(self, worker: ManagedProcess, port: int) -> dict[str, float]:
        """Wait until ``worker`` applied every preloaded event; its rate and batch size."""
        metrics = f"http://127.0.0.1:{port}/metrics"
        applied = (
            r'^dictamesh_catalog_events_total\{entity_type="invoice",tenant="[^"]+",result="\w+"\} '
            r"(\S+)$"
        )
        first: float | None = None
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                try:
                    done = await _metric(http, metrics, applied)
                except aiohttp.ClientError:
                    continue
                if done and first is None:
                    first = time.monotonic()
                if done >= self.count:
                    break
            else:
                raise StackError(
                    f"the worker did not apply {self.count} events; see {worker.log_path}"
                )
            events = await _metric(http, metrics, r"^dictamesh_catalog_batch_events_sum (\S+)$")
            batches = await _metric(http, metrics, r"^dictamesh_catalog_batch_events_count (\S+)$")
        elapsed = time.monotonic() - (first or time.monotonic())
        return {"catalog_per_s": self.count / elapsed, "batch_mean": events / max(batches, 1)}

    async def _catalog(self) -> dict[str, float]:
        state = self.root / "worker"
        worker, port, _ = await self._start_ready(state)
        figures = await self._fold(worker, port)
        assert worker.pid is not None
        figures["rss_mb"] = _rss_mb(worker.pid)
        await worker.stop()
        figures["disk_mb"] = _du_mb(state)
        # Recovery: a new worker with no local state rebuilds the tables from the changelogs.
        shutil.rmtree(state)
        fresh, _, figures["recovery_s"] = await self._start_ready(state)
        await fresh.stop()
        return figures

    async def run(self) -> dict[str, float]:
        try:
            await self._start_services()
            figures = {"preload_per_s": await self._preload()}
            figures["ceiling_per_s"] = await self._ceiling()
            figures.update(await self._catalog())
            figures["ratio"] = figures["catalog_per_s"] / figures["ceiling_per_s"]
            return figures
        finally:
            for proc in reversed(self.procs):
                await proc.stop()
            shutil.rmtree(self.root, ignore_errors=True)


def run_ingest(settings: Settings, events: int) -> int:
    """``mesh bench ingest``: print the figures; return the exit code."""
    print(f"ingest: {events} invoice CREATE events, {PARTITIONS} partitions, one worker")
    f = asyncio.run(IngestBench(settings, events).run())
    print(f"raw aiokafka consume → produce (ceiling): {f['ceiling_per_s']:,.0f} events/s")
    print(f"catalog, one worker (tables + relation index): {f['catalog_per_s']:,.0f} events/s")
    print(f"ratio catalog / ceiling: {f['ratio']:.2f} (mean batch {f['batch_mean']:.0f} events)")
    print(f"worker resident memory: {f['rss_mb']:,.0f} MB; state on disk: {f['disk_mb']:,.0f} MB")
    print(f"recovery of a new worker from the changelogs: {f['recovery_s']:.1f} s")
    return 0
