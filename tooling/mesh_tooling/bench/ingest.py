"""``mesh bench ingest``: how fast one worker materialises change events into the catalog.

Self-contained: starts its own broker, schema registry and worker under a scratch
directory. It pre-loads N change events, measures in the same run

* the ceiling: raw aiokafka consume → produce of the same messages on the same broker;
* the catalog: events/s one worker folds into its tables (entity records + relation
  indexes), from its first applied event to its last;

and reports their ratio, the worker's CPU per event, its resident memory (the worker
process's own, at the end and at its peak; the broker is another process, whose memory is
reported apart) and disk use, and how long a new worker takes to recover the tables from
their changelogs (unless ``--no-recovery``).

With ``--tracing`` it measures instead what tracing costs the catalog: the same events
folded by a fresh worker on a fresh broker with tracing off, at the default sampler and at
100 %, the three alternated over rounds (see :meth:`IngestBench.run_tracing`), the
workers exporting to a counting OTLP sink (:mod:`mesh_tooling.dev.otlp_sink`).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
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
from mesh.observability.tracing import DEFAULT_RATIO, inject_headers
from mesh.schemas import load_event_schemas
from mesh.settings import Settings
from mesh.sources.events import ChangeEvent
from mesh_tooling.dev.broker import start_broker
from mesh_tooling.dev.process import ManagedProcess, free_port

PARTITIONS = 8
TRACING_MODES = ("off", "default", "100%")
"""Tracing off (no endpoint), on at the default sampler, on with every trace sampled."""
TRACING_TARGET = 0.85
"""Throughput at the default sampler, as a share of the same run's untraced throughput."""
POLL_RECORDS = 500
"""Records one source poll publishes under one trace: a full page (the Directus adapter's
default ``page_size``), as in a bulk load, the case where ingest throughput matters."""

Headers = list[tuple[str, bytes]]


def poll_headers(mode: str, polls: int, tenant: str, seed: int = 0) -> list[Headers]:
    """The trace headers of each of ``polls`` source polls' records under ``mode``, made
    the way an adapter makes them (:func:`~mesh.observability.tracing.inject_headers`
    under the poll's ``publish`` span, from a tracer provider with that mode's sampler):
    ``off``: none (the API's no-op span has no context); ``default``: ``traceparent`` and
    the tenant as ``baggage`` on every record, flagged sampled for the polls whose new trace
    the parent-based default sampler keeps (what the source decides; the catalog follows the
    flag); ``100%``: the same, every poll sampled."""
    if mode == "off":
        return [[] for _ in range(polls)]
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

    class SeededIds(IdGenerator):
        """Ids from a seeded generator: every run of a mode carries the same headers, so
        the same polls are sampled in each round."""

        rng = random.Random(seed)

        def generate_span_id(self) -> int:
            return self.rng.getrandbits(64) or 1

        def generate_trace_id(self) -> int:
            return self.rng.getrandbits(128) or 1

    sampler = ALWAYS_ON if mode == "100%" else ParentBased(TraceIdRatioBased(DEFAULT_RATIO))
    provider = TracerProvider(sampler=sampler, id_generator=SeededIds())  # exports nothing
    tracer = provider.get_tracer("bench")
    out = []
    for _ in range(polls):
        with tracer.start_as_current_span("directus poll"), tracer.start_as_current_span("publish"):
            out.append(inject_headers(tenant))
    provider.shutdown()
    return out


def sampled_share(headers: Sequence[Headers]) -> float:
    """The share of polls whose ``traceparent`` is flagged sampled."""
    sampled = sum(1 for h in headers for k, v in h if k == "traceparent" and v.endswith(b"01"))
    return sampled / len(headers) if headers else 0.0


def trace_env(mode: str, endpoint: str) -> dict[str, str]:
    """A worker's ``OTEL_*`` settings for ``mode``, exporting to ``endpoint``; whatever
    the caller's environment says, ``off`` exports nothing and ``default`` is the product's
    default sampler (parent-based, :data:`DEFAULT_RATIO` of new traces)."""
    if mode == "off":
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ""}
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{endpoint}/v1/traces",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_EXPORTER": "otlp",
    }
    if mode == "100%":
        env["OTEL_TRACES_SAMPLER"] = "always_on"
    elif "OTEL_TRACES_SAMPLER" in os.environ:  # cannot be unset for the child: say the default
        env["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        env["OTEL_TRACES_SAMPLER_ARG"] = str(DEFAULT_RATIO)
    return env


@dataclass
class TracedRun:
    """One worker's fold of the preloaded events under a tracing mode."""

    mode: str
    round: int
    per_s: float
    batch_mean: float
    sampled_polls: float
    """Share of the polls (of :data:`POLL_RECORDS` records) whose trace was sampled."""
    exports: int = 0
    """OTLP export requests the sink received from this worker, and their spans/bytes."""
    spans: int = 0
    export_bytes: int = 0


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


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) the process ``pid`` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1024 / 1024


class IngestBench:
    """One run: services, preload, ceiling, catalog, recovery."""

    def __init__(self, settings: Settings, events: int, recovery: bool = True) -> None:
        self.settings = settings
        self.count = events
        self.recovery = recovery
        self.domain = load_domain(settings.domain_config)
        self.topic = self.domain.topic("invoice")
        self.root = Path(tempfile.mkdtemp(prefix="dictamesh-bench-"))
        os.chmod(self.root, 0o755)
        self.procs: list[ManagedProcess] = []
        self.broker: ManagedProcess | None = None
        self._values: list[tuple[bytes, bytes]] | None = None
        self.sink_url = ""

    async def _start_services(self) -> None:
        await self._start_broker()
        await self._start_registry()

    async def _start_broker(self) -> ManagedProcess:
        port = free_port()
        broker = await start_broker("127.0.0.1", port, self.root / "logs")
        self.procs.append(broker)
        self.broker = broker
        self.bootstrap = f"127.0.0.1:{port}"
        return broker

    async def _start_registry(self) -> None:
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

    def _encoded(self) -> list[tuple[bytes, bytes]]:
        """The preloaded events' keys and Avro values (encoded once per run)."""
        if self._values is None:
            schemas = load_event_schemas(self.domain, self.settings.schemas_dir)
            registry = RegistryClient(self.registry_url)
            codec = build_codecs(self.domain, schemas, registry)["invoice"]
            events = _events(self.domain, self.count)
            self._values = [(key, codec.dumps(event)) for _, key, event in events]
        return self._values

    async def _preload(self, polls: Sequence[Headers] | None = None) -> float:
        """Create the topics and produce the events; with ``polls``, record ``n`` carries
        its source's headers and those of poll ``n // POLL_RECORDS`` (as an adapter sends)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        topics = [self.topic, "bench-ceiling-out"]
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
        await admin.close()
        source = ChangeEvent.headers(self.domain.entity_sources("invoice")[0])
        values = self._encoded()
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=5, max_batch_size=256 * 1024
        )
        await producer.start()
        started = time.monotonic()
        pending = []
        for n, (key, value) in enumerate(values):
            headers = None if polls is None else source + polls[n // POLL_RECORDS]
            pending.append(await producer.send(self.topic, value, key=key, headers=headers))
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
        # Any label order: the exposition's is not part of the metric's contract.
        applied = r'^dictamesh_catalog_events_total\{[^}]*entity_type="invoice"[^}]*\} (\S+)$'
        first: float | None = None
        assert worker.pid is not None
        cpu_before = _cpu_s(worker.pid)
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
            cpu = _cpu_s(worker.pid) - cpu_before
            events = await _metric(http, metrics, r"^dictamesh_catalog_batch_events_sum (\S+)$")
            batches = await _metric(http, metrics, r"^dictamesh_catalog_batch_events_count (\S+)$")
        elapsed = time.monotonic() - (first or time.monotonic())
        return {
            "catalog_per_s": self.count / elapsed,
            "batch_mean": events / max(batches, 1),
            # From the worker's readiness to its last event (its start-up is not counted).
            "cpu_us_per_event": cpu / self.count * 1e6,
        }

    async def _catalog(self) -> dict[str, float]:
        state = self.root / "worker"
        worker, port, _ = await self._start_ready(state)
        figures = await self._fold(worker, port)
        assert worker.pid is not None
        figures["rss_mb"] = _rss_mb(worker.pid)
        figures["rss_peak_mb"] = _rss_mb(worker.pid, "VmHWM")
        if self.broker is not None and self.broker.running and self.broker.pid is not None:
            figures["broker_rss_mb"] = _rss_mb(self.broker.pid)
        await worker.stop()
        figures["disk_mb"] = _du_mb(state)
        if self.recovery:
            # A new worker with no local state rebuilds the tables from the changelogs.
            shutil.rmtree(state)
            fresh, _, figures["recovery_s"] = await self._start_ready(state)
            await fresh.stop()
        return figures

    async def _start_sink(self) -> None:
        """The counting OTLP sink, in a process of its own (its CPU is not the bench's)."""
        port = free_port()
        sink = ManagedProcess(
            "OTLP sink", [sys.executable, "-m", "mesh_tooling.dev.otlp_sink", "--port", str(port)],
            log_path=self.root / "logs" / "otlp-sink.log",
        )  # fmt: skip
        await sink.start()
        self.procs.append(sink)
        self.sink_url = f"http://127.0.0.1:{port}"

        async def ok() -> bool:
            async with aiohttp.ClientSession() as http, http.get(f"{self.sink_url}/stats") as r:
                return r.status == 200

        await sink.wait_ready(ok, timeout=30)

    async def sink_stats(self, settle: float = 0.0) -> dict[str, int]:
        """What the sink received so far; with ``settle``, once nothing more arrived for
        that long (a stopping worker's last export)."""
        last: dict[str, int] = {}
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"{self.sink_url}/stats") as resp:
                    stats = dict(json.loads(await resp.text()))
                if not settle or stats == last:
                    return stats
                last = stats
                await asyncio.sleep(settle)

    async def _traced(self, mode: str, round_: int, polls: Sequence[Headers]) -> TracedRun:
        """One fold under ``mode``: a fresh broker and worker, the events preloaded with
        that mode's headers."""
        broker = await self._start_broker()
        state = self.root / f"worker-{TRACING_MODES.index(mode)}-{round_}"
        try:
            await self._preload(polls)
            before = await self.sink_stats()
            worker, port, _ = await self._start_ready(state, **trace_env(mode, self.sink_url))
            figures = await self._fold(worker, port)
            await worker.stop()  # the SDK exports what it still holds at exit
            after = await self.sink_stats(settle=1.0)
        finally:
            await broker.stop()
            shutil.rmtree(state, ignore_errors=True)
        return TracedRun(
            mode, round_, figures["catalog_per_s"], figures["batch_mean"], sampled_share(polls),
            exports=after["requests"] - before["requests"], spans=after["spans"] - before["spans"],
            export_bytes=after["bytes"] - before["bytes"],
        )  # fmt: skip

    async def run_tracing(self, rounds: int = 3) -> list[TracedRun]:
        """Fold the events once per tracing mode and round, each time on a fresh broker
        (the same events, headers as an adapter in that mode sends them) by a fresh worker.
        The modes rotate: round ``r`` starts with mode ``r mod 3``, so over three rounds
        each mode runs once first, second and third (a shared machine drifts)."""
        polls = -(-self.count // POLL_RECORDS)
        tenant = self.domain.entity_sources("invoice")[0].tenant
        headers = {mode: poll_headers(mode, polls, tenant) for mode in TRACING_MODES}
        out = []
        try:
            await self._start_registry()
            await self._start_sink()
            for n in range(rounds):
                order = TRACING_MODES[n % 3 :] + TRACING_MODES[: n % 3]
                for mode in order:
                    print(f"  round {n + 1} of {rounds}: tracing {mode}", flush=True)
                    out.append(await self._traced(mode, n + 1, headers[mode]))
            return out
        finally:
            for proc in reversed(self.procs):
                await proc.stop()
            shutil.rmtree(self.root, ignore_errors=True)

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


def run_ingest(
    settings: Settings, events: int, tracing: bool = False, rounds: int = 3, recovery: bool = True
) -> int:
    """``mesh bench ingest``: print the figures; return the exit code."""
    if tracing:
        print(f"ingest with tracing: {events} invoice CREATE events, {PARTITIONS} partitions, "
              f"one worker; tracing off / default sampler / 100 % alternated over {rounds} "
              f"round(s), a fresh broker and worker each time; {POLL_RECORDS} records per "
              "source poll (one trace each); spans exported to a counting OTLP sink")  # fmt: skip
        runs = asyncio.run(IngestBench(settings, events).run_tracing(rounds))
        print("\n".join(tracing_report(runs)))
        return 0
    print(f"ingest: {events} invoice CREATE events, {PARTITIONS} partitions, one worker")
    f = asyncio.run(IngestBench(settings, events, recovery=recovery).run())
    print(f"raw aiokafka consume → produce (ceiling): {f['ceiling_per_s']:,.0f} events/s")
    print(f"catalog, one worker (tables + relation index): {f['catalog_per_s']:,.0f} events/s")
    print(f"ratio catalog / ceiling: {f['ratio']:.2f} (mean batch {f['batch_mean']:.0f} events)")
    print(f"worker CPU: {f['cpu_us_per_event']:.1f} µs per event (every thread of the process)")
    print(
        f"worker resident memory: {f['rss_mb']:,.0f} MB (peak {f['rss_peak_mb']:,.0f} MB); "
        f"state on disk: {f['disk_mb']:,.0f} MB"
    )
    if "broker_rss_mb" in f:
        print(f"broker resident memory (another process, not counted above): "
              f"{f['broker_rss_mb']:,.0f} MB")  # fmt: skip
    if "recovery_s" in f:
        print(f"recovery of a new worker from the changelogs: {f['recovery_s']:.1f} s")
    return 0


def mode_summary(what: str, unit: str, runs: Sequence[tuple[str, int, float]]) -> list[str]:
    """Per tracing mode, from ``(mode, round, value)``: the mean value and its range, and
    (but for ``off``) the ratio to ``off`` of the same round: mean and range over rounds."""
    lines = []
    off = {r: v for m, r, v in runs if m == "off"}
    for mode in TRACING_MODES:
        values = [v for m, _, v in runs if m == mode]
        if not values:
            continue
        line = (
            f"{what}, tracing {mode:<7}: mean {sum(values) / len(values):8,.0f} {unit} "
            f"(range {min(values):,.0f} to {max(values):,.0f}, {len(values)} runs)"
        )
        ratios = [v / off[r] for m, r, v in runs if m == mode and r in off and off[r]]
        if mode != "off" and ratios:
            line += (
                f"; / off of the same round: mean {sum(ratios) / len(ratios):.2f} "
                f"(range {min(ratios):.2f} to {max(ratios):.2f})"
            )
            if mode == "default":
                met = sum(ratios) / len(ratios) >= TRACING_TARGET
                line += f", target ≥ {TRACING_TARGET}: {'met' if met else 'NOT met'}"
        lines.append(line)
    return lines


def tracing_report(runs: list[TracedRun]) -> list[str]:
    """``mesh bench ingest --tracing``: each run, then the summary per mode."""
    lines = [
        f"round {t.round} {t.mode:<7}: {t.per_s:8,.0f} events/s (mean batch {t.batch_mean:.0f}); "
        f"{t.sampled_polls:.0%} of polls sampled; exported {t.spans} spans in {t.exports} "
        f"requests ({t.export_bytes / 1024:,.0f} KiB)"
        for t in runs
    ]
    return lines + mode_summary("catalog", "events/s", [(t.mode, t.round, t.per_s) for t in runs])
