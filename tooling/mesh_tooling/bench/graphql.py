"""``mesh bench graphql``: requests/s and p50/p99 latency of ``POST /graphql``.

Self-contained like ``mesh bench ingest`` (whose broker, registry and worker helpers it
reuses): it loads N customers, 10 products and, for customer 1, 20 invoices of 5 items,
then measures with one worker and with two (the entities spread over both, so nested reads
cross workers)

* by id: ``{ customer(id: $random) { id name email } }``;
* nested: the README's query for customer 1 (20 invoices x 5 items with their products);

each twice: as is (answered from the read caches once warm) and with ``Cache-Control:
no-cache`` (executed against the tables every time). With ``MESH_REDIS_URL`` set the
workers share their cross-worker reads through that Redis.

The load (a closed loop of ``--concurrency`` requests in flight, :mod:`mesh_tooling.bench.load`)
runs in this process, on the same cores as the workers.

With ``--tracing`` it measures instead what tracing costs: by id cached, nested cached and
uncached, on one fresh worker per mode (tracing off, at the default sampler, at 100 %), the
modes rotated over rounds, the worker exporting to a counting OTLP sink
(:meth:`GraphQLBench.run_tracing_scenarios`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from mesh.codec import RegistryClient, build_codecs
from mesh.errors import StackError
from mesh.graphql.loader import INTERNAL_ENTITIES_PATH
from mesh.schemas import load_event_schemas
from mesh.settings import Settings
from mesh.sources.events import ChangeEvent, Op
from mesh_tooling.bench.ingest import (
    PARTITIONS,
    TRACING_MODES,
    IngestBench,
    _metric,
    mode_summary,
    trace_env,
)
from mesh_tooling.bench.load import LoadResult, generate_load
from mesh_tooling.dev.issuer import DevIssuer
from mesh_tooling.dev.process import ManagedProcess, free_port

INVOICES, ITEMS, PRODUCTS = 20, 5, 10
BY_ID = "query ($id: ID!) { customer(id: $id) { id name email } }"
NESTED = """{ customer(id: "1") { id name email invoices { id number status
    items { quantity product { sku name price } } } } }"""
TARGET_PER_S, TARGET_BY_ID_P99, TARGET_NESTED_P99 = 6000.0, 5.0, 50.0
"""Per worker process: by id >= 6,000 requests/s at p99 <= 5 ms; nested p99 <= 50 ms."""
NO_CACHE = {"Cache-Control": "no-cache"}
AUTH_AB = "auth-a/b"
"""By id, cached, one worker, authentication off and on alternated (see _measure_auth)."""
TRACE_AB = "trace-a/b"
"""By id or nested, cached, one worker, tracing off / default / 100 % (see _measure_tracing)."""
BASELINE = "baseline"
NO_KEYS = b'{"tenant": "default", "keys": []}'
"""The baseline: the cheapest request through the same web stack (an internal read of
no keys), measured in the same run; GraphQL figures are also given as ratios to it."""
_APPLIED = r"^dictamesh_catalog_events_total\{[^}]*\} (\S+)$"


@dataclass
class Scenario:
    """One measured window: which query, how many workers, what the load saw."""

    query: str
    workers: int
    load: LoadResult
    cached: bool
    """Whether the requests could be answered from the read caches."""
    auth: bool = False
    """Authentication on: every request carried a bearer token the worker verified."""
    cpu_us: float | None = None
    """The workers' CPU time per request (µs), whatever the load client costs."""
    tracing: str | None = None
    """With ``--tracing``: the mode (one of ``TRACING_MODES``), its round, and the spans
    the sink received while the scenario ran (warm-up included)."""
    round: int = 0
    spans: int = 0


def _cpu_seconds(procs: list[ManagedProcess]) -> float:
    """User + system CPU time the processes used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in procs:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


async def _load(procs: list[ManagedProcess], **options: Any) -> tuple[LoadResult, float]:
    """``generate_load(**options)`` and the workers' CPU µs per request meanwhile."""
    cpu, wall = _cpu_seconds(procs), time.monotonic()
    load = await generate_load(**options)
    share = (_cpu_seconds(procs) - cpu) / (time.monotonic() - wall)
    return load, share * 1e6 / load.per_s if load.per_s else 0.0


def _records(customers: int) -> list[tuple[str, int, dict[str, Any]]]:
    """``(entity type, id, after)`` of everything the bench loads."""
    t0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    stamps = {"date_created": t0, "date_updated": None}
    out: list[tuple[str, int, dict[str, Any]]] = []
    for p in range(1, PRODUCTS + 1):
        out.append(("product", p, {"sku": f"sku-{p}", "name": f"Product {p}",
                                   "price": Decimal(f"{p}.50"), "stock": 5, **stamps}))  # fmt: skip
    for c in range(1, customers + 1):
        out.append(("customer", c, {"name": f"Customer {c}", "email": f"c{c}@example.com",
                                    "status": "active", **stamps}))  # fmt: skip
    for i in range(1, INVOICES + 1):
        inv = {"number": f"INV-{i:04d}", "customer": 1, "status": "open", "issued_at": t0,
               "total": Decimal("10.00"), **stamps}  # fmt: skip
        out.append(("invoice", i, inv))
        for n in range(ITEMS):
            item = {"invoice": i, "product": (i + n) % PRODUCTS + 1, "quantity": n + 1,
                    "unit_price": Decimal("2.50"), **stamps}  # fmt: skip
            out.append(("invoice_item", i * 100 + n, item))
    return out


def _nested_complete(answer: Any) -> bool:
    """Whether the nested query's answer shows every invoice, item and product."""
    try:
        invoices = answer["data"]["customer"]["invoices"]
        items = [item for inv in invoices for item in inv["items"]]
    except (KeyError, TypeError):
        return False
    return (
        len(invoices) == INVOICES
        and len(items) == INVOICES * ITEMS
        and all(item["product"] is not None for item in items)
    )


class GraphQLBench(IngestBench):
    """One run: services, the entities, then each worker count's scenarios."""

    def __init__(self, settings: Settings, customers: int, concurrency: int,
                 duration: float, warmup: float) -> None:  # fmt: skip
        super().__init__(settings, events=0)
        self.customers = customers
        self.concurrency = concurrency
        self.duration = duration
        self.warmup = warmup
        self.records = _records(customers)
        # Names this run's keys in a shared Redis: another run's entries are not its own.
        self.run_id = secrets.token_hex(4)
        self.auth_headers: dict[str, str] = {}
        """The bearer token of the fleet with authentication on (set when it starts)."""

    async def _load_entities(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        topics = [self.domain.topic(t) for t in self.domain.entities]
        await admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
        await admin.close()
        schemas = load_event_schemas(self.domain, self.settings.schemas_dir)
        codecs = build_codecs(self.domain, schemas, RegistryClient(self.registry_url))
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        await producer.start()
        try:
            pending = []
            for position, (entity_type, entity_id, after) in enumerate(self.records, 1):
                entity = self.domain.entities[entity_type]
                event = ChangeEvent(
                    entity_type, str(entity_id), Op.CREATE, entity.collection, position,
                    datetime.now(UTC), {"id": entity_id, **after}, tuple(after),
                )  # fmt: skip
                source = self.domain.entity_sources(entity_type)[0]
                value = codecs[entity_type].dumps(event.envelope(source))
                topic = self.domain.topic(entity_type)
                pending.append(await producer.send(topic, value, key=event.key(source)))
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    async def _start_workers(
        self, count: int, env: dict[str, str] | None = None, tag: str = ""
    ) -> tuple[list[ManagedProcess], list[str]]:
        procs, urls = [], []
        fleet = f"{count}{tag}"
        for n in range(count):
            port = free_port()
            proc = self._worker(self.root / f"workers-{fleet}" / f"w{n}", port)
            assert proc.env is not None
            # A consumer group per fleet: the new fleet reads the topics afresh.
            proc.env.update({"MESH_APP_ID": f"bench-graphql-{fleet}-{self.run_id}",
                             "MESH_WORKER_NAME": f"w{n}", **(env or {})})  # fmt: skip
            if self.settings.redis_url is not None:  # cross-worker reads shared in Redis
                proc.env["MESH_REDIS_URL"] = self.settings.redis_url.get_secret_value()
            await proc.start()
            self.procs.append(proc)
            procs.append(proc)
            urls.append(f"http://127.0.0.1:{port}")
        await self._wait_materialised(urls, timeout=300, headers=self.auth_headers or None)
        return procs, urls

    async def _wait_materialised(
        self, urls: list[str], timeout: float, headers: dict[str, str] | None = None
    ) -> None:
        """Every worker ready with partitions, every event applied, the queries complete."""
        last: list[object] = []
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(headers=headers) as http:
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                try:
                    if await self._materialised(http, urls, last):
                        return
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last[:] = [exc]
        raise StackError(f"the workers did not materialise the entities: {last}")

    async def _materialised(
        self, http: aiohttp.ClientSession, urls: list[str], last: list[object]
    ) -> bool:
        applied = 0.0
        for url in urls:
            async with http.get(f"{url}/readyz") as resp:
                body = await resp.json()
                if resp.status != 200 or not body["active_partitions"]:
                    last[:] = [url, body]
                    return False
            applied += await _metric(http, f"{url}/metrics", _APPLIED)
        if applied < len(self.records):
            last[:] = [f"{applied:.0f}/{len(self.records)} events applied"]
            return False
        for url in urls:
            for query in (NESTED, f'{{ customer(id: "{self.customers}") {{ id }} }}'):
                async with http.post(f"{url}/graphql", json={"query": query}) as resp:
                    answer = await resp.json()
                done = (answer.get("data") or {}).get("customer") and not answer.get("errors")
                if not done or (query is NESTED and not _nested_complete(answer)):
                    last[:] = [url, str(answer)[:300]]
                    return False
        return True

    async def _measure(self, urls: list[str], procs: list[ManagedProcess]) -> list[Scenario]:
        by_id = [
            json.dumps({"query": BY_ID, "variables": {"id": str(c)}}).encode()
            for c in range(1, self.customers + 1)
        ]
        nested = json.dumps({"query": NESTED}).encode()
        print(f"  baseline, {len(urls)} worker(s): POST {INTERNAL_ENTITIES_PATH} without keys",
              flush=True)  # fmt: skip
        baseline, cpu = await _load(
            procs, urls=[url + INTERNAL_ENTITIES_PATH for url in urls], body=lambda r: NO_KEYS,
            concurrency=self.concurrency, warmup=self.warmup, duration=self.duration,
            graphql=False,
        )  # fmt: skip
        out = [Scenario(BASELINE, len(urls), baseline, cached=False, cpu_us=cpu)]
        targets = [f"{url}/graphql" for url in urls]
        queries = (("by-id", lambda r: r.choice(by_id)), ("nested", lambda r: nested))
        for name, body in queries:
            for cached in (True, False):
                how = "cached" if cached else "uncached (Cache-Control: no-cache)"
                print(f"  {name}, {how}, {len(urls)} worker(s): {self.warmup:.0f} s warm-up, "
                      f"{self.duration:.0f} s measured", flush=True)  # fmt: skip
                load, cpu = await _load(
                    procs, urls=targets, body=body, concurrency=self.concurrency,
                    warmup=self.warmup, duration=self.duration,
                    headers=None if cached else NO_CACHE,
                )  # fmt: skip
                out.append(Scenario(name, len(urls), load, cached, cpu_us=cpu))
        return out

    async def _measure_auth(self, rounds: int = 2) -> list[Scenario]:
        """By id, cached, on one worker without and with authentication (the dev issuer's
        token, one for all requests as a real client sends it again and again), each on a
        fresh worker, alternated ``rounds`` times: figures taken at different moments of a
        shared machine differ by more than what is compared."""
        issuer = DevIssuer.in_dir(self.root / "issuer")
        # Every scope a field policy names: the same queries answer the same data.
        scopes = sorted(
            {s for e in self.domain.entities.values() for f in e.fields.values()
             for s in f.requires_scopes}
        )  # fmt: skip
        token = issuer.mint(
            self.domain.tenants[0], scopes=tuple(scopes), subject="bench", ttl_s=3600
        )
        on = {**issuer.worker_env(), "MESH_FLEET_SECRET": secrets.token_urlsafe(32)}
        by_id = [
            json.dumps({"query": BY_ID, "variables": {"id": str(c)}}).encode()
            for c in range(1, self.customers + 1)
        ]
        out = []
        for n in range(rounds):
            for auth in (False, True):
                self.auth_headers = {"Authorization": f"Bearer {token}"} if auth else {}
                print(f"  by-id, cached, a new worker, authentication {'on' if auth else 'off'} "
                      f"(round {n + 1} of {rounds})", flush=True)  # fmt: skip
                env = on if auth else {"MESH_AUTH": "off"}
                procs, urls = await self._start_workers(1, env=env, tag=f"-ab{n}{int(auth)}")
                load, cpu = await _load(
                    procs, urls=[f"{urls[0]}/graphql"], body=lambda r: r.choice(by_id),
                    concurrency=self.concurrency, warmup=self.warmup, duration=self.duration,
                    headers=self.auth_headers or None,
                )  # fmt: skip
                for proc in procs:
                    await proc.stop()
                out.append(Scenario(AUTH_AB, 1, load, cached=True, auth=auth, cpu_us=cpu))
        self.auth_headers = {}
        return out

    async def _measure_tracing(self, rounds: int) -> list[Scenario]:
        """By id cached, nested cached and uncached, on one fresh worker per tracing mode and
        round; the
        modes rotate as in ``mesh bench ingest --tracing`` (round ``r`` starts with mode
        ``r mod 3``). The requests carry no ``traceparent``: the worker's sampler decides,
        as for a client that does not trace."""
        by_id = [
            json.dumps({"query": BY_ID, "variables": {"id": str(c)}}).encode()
            for c in range(1, self.customers + 1)
        ]
        nested = json.dumps({"query": NESTED}).encode()
        queries = (
            ("by-id", True, lambda r: r.choice(by_id)),
            ("nested", True, lambda r: nested),
            ("nested", False, lambda r: nested),  # executed: operation and loader spans too
        )
        out = []
        for n in range(rounds):
            for mode in TRACING_MODES[n % 3 :] + TRACING_MODES[: n % 3]:
                print(f"  a new worker, tracing {mode} (round {n + 1} of {rounds}): by-id "
                      "cached, nested cached and uncached", flush=True)  # fmt: skip
                tag = f"-tr{n}{TRACING_MODES.index(mode)}"
                env = trace_env(mode, self.sink_url)
                procs, urls = await self._start_workers(1, env=env, tag=tag)
                for name, cached, body in queries:
                    before = await self.sink_stats()
                    load, cpu = await _load(
                        procs, urls=[f"{urls[0]}/graphql"], body=body,
                        concurrency=self.concurrency, warmup=self.warmup, duration=self.duration,
                        headers=None if cached else NO_CACHE,
                    )  # fmt: skip
                    spans = (await self.sink_stats())["spans"] - before["spans"]
                    out.append(Scenario(name, 1, load, cached=cached, cpu_us=cpu, tracing=mode,
                                        round=n + 1, spans=spans))  # fmt: skip
                for proc in procs:
                    await proc.stop()
        return out

    async def run_tracing_scenarios(self, rounds: int = 3) -> list[Scenario]:
        """Start the services, load the entities, measure :meth:`_measure_tracing`; clean up."""
        try:
            await self._start_services()
            await self._start_sink()
            await self._load_entities()
            return await self._measure_tracing(rounds)
        finally:
            for proc in reversed(self.procs):
                await proc.stop()
            shutil.rmtree(self.root, ignore_errors=True)

    async def run_scenarios(
        self, worker_counts: tuple[int, ...] = (1, 2), *, auth_rounds: int = 2
    ) -> list[Scenario]:
        """Start the services, load the entities, measure each worker count, then the
        cached read by id without and with authentication, ``auth_rounds`` times; clean up."""
        try:
            await self._start_services()
            await self._load_entities()
            out: list[Scenario] = []
            for count in worker_counts:
                print(f"starting {count} worker(s) and waiting for the entities …", flush=True)
                procs, urls = await self._start_workers(count)
                out += await self._measure(urls, procs)
                for proc in procs:
                    await proc.stop()
            if auth_rounds:
                out += await self._measure_auth(auth_rounds)
            return out
        finally:
            for proc in reversed(self.procs):
                await proc.stop()
            shutil.rmtree(self.root, ignore_errors=True)


def report(scenarios: list[Scenario]) -> list[str]:
    """The report's lines: one per scenario, then per worker process for more than one."""
    lines = []
    baselines = {s.workers: s.load.per_s for s in scenarios if s.query == BASELINE}
    for s in scenarios:
        if s.query == AUTH_AB:
            continue
        per_worker = s.load.per_s / s.workers
        ok = s.load.requests > 0 and not s.load.errors
        if s.query == BASELINE:
            target = "the web stack's ceiling on this machine"
        elif s.query == "by-id":
            met = ok and per_worker >= TARGET_PER_S and s.load.p99_ms <= TARGET_BY_ID_P99
            target = f"target ≥ {TARGET_PER_S:,.0f}/s per worker at p99 ≤ {TARGET_BY_ID_P99:.0f} ms"
        else:
            met = ok and s.load.p99_ms <= TARGET_NESTED_P99
            target = f"target p99 ≤ {TARGET_NESTED_P99:.0f} ms"
        if s.query != BASELINE:
            ceiling = baselines.get(s.workers)
            ratio = f", {s.load.per_s / ceiling:.2f} of the baseline" if ceiling else ""
            target = f"{target}: {'met' if met else 'NOT met'}{ratio}"
        kind = "" if s.query == BASELINE else ("cached" if s.cached else "uncached")
        lines.append(
            f"{s.query:<8} {kind:<8} {s.workers} worker(s): {s.load.per_s:8,.0f} requests/s "
            f"({per_worker:,.0f}/s per worker), p50 {s.load.p50_ms:6.2f} ms, "
            f"p99 {s.load.p99_ms:6.2f} ms, errors {s.load.errors} — {target}"
            + (f"; worker CPU {s.cpu_us:.0f} µs/request" if s.cpu_us is not None else "")
        )
        if s.workers > 1:
            shares = ", ".join(
                f"{re.sub(r'^http://|/(graphql|api/.*)$', '', url)} {n / s.load.seconds:,.0f}/s"
                for url, n in sorted(s.load.per_target.items())
            )
            lines.append(f"        requests/s per worker process: {shares}")
        if s.load.first_error:
            lines.append(f"        first error: {s.load.first_error}")
    return lines + _auth_lines([s for s in scenarios if s.query == AUTH_AB])


def _auth_lines(runs: list[Scenario]) -> list[str]:
    """The authentication A/B: each run, then the mean ratio of on to off."""
    if not runs:
        return []
    lines = [
        f"by-id    cached   1 worker(s), auth {'on ' if s.auth else 'off'}: {s.load.per_s:8,.0f} "
        f"requests/s, p50 {s.load.p50_ms:6.2f} ms, p99 {s.load.p99_ms:6.2f} ms, errors "
        f"{s.load.errors}; worker CPU {s.cpu_us or 0:.0f} µs/request"
        for s in runs
    ]
    on = [s.load.per_s for s in runs if s.auth]
    off = [s.load.per_s for s in runs if not s.auth]
    if on and off:
        ratio = (sum(on) / len(on)) / (sum(off) / len(off))
        lines.append(
            f"authentication on / off, by id cached, mean of {len(on)} alternated runs: "
            f"{ratio:.2f} (target ≥ 0.9)"
        )
    return lines


def tracing_report(scenarios: list[Scenario]) -> list[str]:
    """``mesh bench graphql --tracing``: each run, then per query the summary per mode."""
    lines = [
        f"{s.query:<8} {'cached' if s.cached else 'uncached':<8} 1 worker(s), round {s.round}, "
        f"tracing {s.tracing:<7}: "
        f"{s.load.per_s:8,.0f} requests/s, p50 {s.load.p50_ms:6.2f} ms, p99 {s.load.p99_ms:6.2f} "
        f"ms, errors {s.load.errors}; worker CPU {s.cpu_us or 0:.0f} µs/request; "
        f"{s.spans} spans exported"
        + (f"\n        first error: {s.load.first_error}" if s.load.first_error else "")
        for s in scenarios
    ]
    for query, cached in dict.fromkeys((s.query, s.cached) for s in scenarios):
        runs = [
            (s.tracing or "", s.round, s.load.per_s)
            for s in scenarios
            if (s.query, s.cached) == (query, cached)
        ]
        what = f"{query} {'cached' if cached else 'uncached'}"
        lines += mode_summary(what, "requests/s", runs)
        # The worker's own cost, whatever else the shared cores run meanwhile.
        per_cpu_s = [
            (s.tracing or "", s.round, 1e6 / s.cpu_us)
            for s in scenarios
            if (s.query, s.cached) == (query, cached) and s.cpu_us
        ]
        lines += mode_summary(what, "requests per worker CPU-second", per_cpu_s)
    return lines


def run_graphql(
    settings: Settings,
    duration: float,
    concurrency: int,
    customers: int,
    warmup: float = 2.0,
    *,
    tracing: bool = False,
    rounds: int = 3,
) -> int:
    """``mesh bench graphql``: print the figures; return the exit code (1 on any error)."""
    if tracing:
        print(f"graphql with tracing: {customers} customers, one worker, by id (cached) and "
              f"nested (cached, uncached), {concurrency} requests in flight, tracing off / "
              f"default sampler / 100 % alternated over {rounds} round(s), a fresh worker "
              "each time; requests without traceparent; spans exported to a counting OTLP "
              "sink. The load client runs in this process, on the same cores as the "
              "worker.")  # fmt: skip
        bench = GraphQLBench(settings, customers, concurrency, duration, warmup)
        scenarios = asyncio.run(bench.run_tracing_scenarios(rounds))
        print("\n".join(tracing_report(scenarios)))
        return 1 if any(s.load.errors for s in scenarios) else 0
    redis = "shared in Redis (MESH_REDIS_URL)" if settings.redis_url else "not shared (no Redis)"
    print(f"graphql: {customers} customers, {PARTITIONS} partitions, customer 1 with "
          f"{INVOICES} invoices x {ITEMS} items; {concurrency} requests in flight; "
          f"cross-worker reads {redis}. The load client runs in this process, on the same "
          "cores as the workers.")  # fmt: skip
    bench = GraphQLBench(settings, customers, concurrency, duration, warmup)
    scenarios = asyncio.run(bench.run_scenarios())
    print("\n".join(report(scenarios)))
    return 1 if any(s.load.errors for s in scenarios) else 0
