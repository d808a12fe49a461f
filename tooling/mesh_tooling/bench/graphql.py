"""``mesh bench graphql``: requests/s and p50/p99 latency of ``POST /graphql``.

Self-contained like ``mesh bench ingest`` (whose broker, registry and worker helpers it
reuses): it loads N customers, 10 products and, for customer 1, 20 invoices of 5 items,
then measures fleets of one worker and of two (the entities spread over both, so nested
reads cross workers), each without and with Redis sharing the cross-worker reads
(``--redis``). On each fleet, first the baseline (the cheapest request through the same
web stack and the same gate: ``POST /api/v1/whoami``, which answers the token's principal),
then

* by id: ``{ customer(id: $random) { id name email } }``;
* nested: the README's query for customer 1 (20 invoices x 5 items with their products);

each twice: as is (answered from the read caches once warm) and with ``Cache-Control:
no-cache`` (executed against the tables every time); ``only`` picks some of the four.
A cached scenario is warmed deterministically first: every request its load can send (by
id: each customer id once; nested: the one query) is sent once to each worker of the fleet
(each has its own response cache, and the load sends to every worker in turn), from this
process, ``concurrency`` in flight (:meth:`GraphQLBench._warm`); then the load's own
time-based warm-up (``--warmup``) before its measured window, as for the uncached ones.
Each is reported as a ratio to the baseline of its own fleet, against the issue's targets
(:data:`TARGETS`).

The workers run in the production configuration (:meth:`GraphQLBench.production_env`,
what ``deploy/base`` sets that a bench can): authentication on, every GraphQL request
and baseline request carrying the dev issuer's RS256 token (verified once, then a cache
hit, as for a client that sends its token again and again), the audit line of every
request written
(``MESH_LOG_LEVEL=info``), the rate limiter on (at a rate the bench never reaches: its one
subject stands for many clients), the peer endpoints on their own port
(``MESH_PEER_PORT_OFFSET=1``) and tracing at the default sampler exporting to a counting
OTLP sink in its own process. With ``dev_config`` they run as the benches used to:
authentication off, logs at warning, tracing as the environment says (off unless an
``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set). After the fleets, the cached read by id on fresh
one-worker fleets with authentication off and on, alternated (:meth:`_measure_auth`).

The load (a closed loop of ``--concurrency`` requests in flight, :mod:`mesh_tooling.bench.load`)
runs in this process or, with ``load_process="separate"``, in a separate one, on the same
cores as the workers. For each measured window the report gives the CPU shares of the
machine's cores the workers, the load generator and everything else used.

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
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypedDict

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from mesh.codec import RegistryClient, build_codecs
from mesh.errors import StackError
from mesh.schemas import load_event_schemas
from mesh.settings import Settings
from mesh.sources.events import ChangeEvent, Op
from mesh.web.auth import WHOAMI_PATH
from mesh_tooling.bench.ingest import (
    PARTITIONS,
    TRACING_MODES,
    IngestBench,
    _metric,
    mode_summary,
    trace_env,
)
from mesh_tooling.bench.load import LOAD_PROCESSES, LoadResult, LoadSpec, cores, run_load
from mesh_tooling.dev.issuer import DevIssuer
from mesh_tooling.dev.process import ManagedProcess, free_port, port_is_free

INVOICES, ITEMS, PRODUCTS = 20, 5, 10
BY_ID = "query ($id: ID!) { customer(id: $id) { id name email } }"
NESTED = """{ customer(id: "1") { id name email invoices { id number status
    items { quantity product { sku name price } } } } }"""
NO_CACHE = {"Cache-Control": "no-cache"}
AUTH_AB = "auth-a/b"
"""By id, cached, one worker, authentication off and on alternated (see _measure_auth)."""
TRACE_AB = "trace-a/b"
"""By id or nested, cached, one worker, tracing off / default / 100 % (see _measure_tracing)."""
BASELINE = "baseline"
"""The baseline: the cheapest request through the same web stack and gate (``POST
/api/v1/whoami``: token checked, rate limited, audited, answered), measured in the same
run; GraphQL figures are given as ratios to it."""
_APPLIED = r"^dictamesh_catalog_events_total\{[^}]*\} (\S+)$"

SCENARIOS = ("by-id-cached", "by-id-uncached", "nested-cached", "nested-uncached")
"""What ``only`` can pick (the baseline is always measured: the ratios need it)."""
AUTH_AB_SCENARIO = "auth-ab"
"""``only`` names the authentication A/B so."""
TARGETS: dict[tuple[int, str, bool], float] = {
    (2, "by-id", True): 0.8,
    (2, "nested", True): 0.5,
    (2, "nested", False): 0.05,
    (1, "by-id", True): 0.9,
    (1, "by-id", False): 0.7,
}
"""The issue's targets, by (workers, query, cached): requests/s per worker process as a
share of the same fleet's baseline per worker process (the same worker count, so the
same as the ratio of the totals)."""
NESTED_P99_MS, NESTED_P99_CONCURRENCY = 50.0, 8
"""Nested uncached with two workers: also p99 <= 50 ms, at 8 requests in flight."""
PEER_PORT_OFFSET = 1
"""The production configuration's ``MESH_PEER_PORT_OFFSET`` (``deploy/base``)."""
RATE_LIMIT_PER_S = 1_000_000
"""The production configuration's rate limit: on, at the most ``MESH_RATE_LIMIT_PER_S``
allows, which the bench never reaches (``deploy/base``'s 100/s is per subject, and the
bench's one subject stands for the many clients a fleet serves)."""


def selection(query: str, cached: bool) -> str:
    """The name ``only`` knows a scenario by, e.g. ``nested-uncached``."""
    return f"{query}-{'cached' if cached else 'uncached'}"


def redis_choice(option: str | None, settings: Settings) -> tuple[str | None, ...]:
    """The Redis of each fleet configuration ``--redis option`` asks for, ``None`` being
    without: ``off``: without only; ``on``: with ``MESH_REDIS_URL`` only; ``both``: without,
    then with ``MESH_REDIS_URL``; a URL: both, with that Redis; unset: both when
    ``MESH_REDIS_URL`` is set, else without only."""
    configured = settings.redis_url.get_secret_value() if settings.redis_url else None
    if option is None:
        return (None, configured) if configured else (None,)
    if option == "off":
        return (None,)
    if "://" in option:
        return (None, option)
    if option in ("on", "both"):
        if not configured:
            raise ValueError(
                f"--redis {option} needs a Redis: give its URL (--redis redis://HOST:PORT/DB) "
                "or set MESH_REDIS_URL"
            )
        return (configured,) if option == "on" else (None, configured)
    raise ValueError(f"--redis takes off, on, both or a redis:// URL, not {option!r}")


@dataclass
class Scenario:
    """One measured window: which query, on which fleet, what the load saw."""

    query: str
    workers: int
    load: LoadResult
    cached: bool
    """Whether the requests could be answered from the read caches."""
    auth: bool = False
    """Authentication on: every request carried a bearer token the worker verified (the
    baseline's: a fleet signature)."""
    cpu_us: float | None = None
    """The workers' CPU time per request (µs) in the measured window."""
    tracing: str | None = None
    """With ``--tracing``: the mode (one of ``TRACING_MODES``), its round, and the spans
    the sink received while the scenario ran (its warm-ups included)."""
    round: int = 0
    spans: int = 0
    """In the production configuration, on a fleet's baseline: the spans the fleet
    exported while it ran (its start, every scenario, its stop)."""
    redis: bool = False
    """The workers shared their cross-worker reads through Redis."""
    production: bool = False
    """The production configuration (see the module docstring)."""
    concurrency: int = 0
    """Requests in flight."""
    load_process: str = "bench"
    """Where the load ran: ``bench`` (this process) or ``separate``."""
    worker_cpu: float | None = None
    """The workers' CPU in the measured window, as a share of the machine's cores."""
    other_cpu: float | None = None
    """Everything else's (broker, Redis, OTLP sink, whatever else the machine runs),
    likewise: the machine's busy share less the workers' and the load generator's."""

    @property
    def load_cpu(self) -> float:
        """The load generator's CPU in the measured window, as a share of the cores."""
        return self.load.cpu_share

    @property
    def name(self) -> str:
        if self.query == BASELINE:
            return BASELINE
        return f"{self.query} {'cached' if self.cached else 'uncached'}"


def _cpu_seconds(procs: list[ManagedProcess]) -> float:
    """User + system CPU time the processes used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in procs:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _machine_ticks() -> tuple[int, int]:
    """Busy and total clock ticks of all the machine's cores so far (``/proc/stat``)."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


class CpuFigures(TypedDict):
    """A measured window's CPU (see :class:`Scenario`)."""

    cpu_us: float | None
    worker_cpu: float | None
    other_cpu: float | None


class _Window:
    """CPU samples at the load's measured window's start and end (``on_window``): the
    workers' CPU time and the machine's busy ticks."""

    def __init__(self, procs: list[ManagedProcess]) -> None:
        self.procs = procs
        self.edges: dict[str, tuple[float, float, tuple[int, int]]] = {}

    def __call__(self, edge: str) -> None:
        self.edges[edge] = (time.monotonic(), _cpu_seconds(self.procs), _machine_ticks())

    def figures(self, load: LoadResult) -> CpuFigures:
        """The workers' CPU µs per request and CPU share, and everything else's share."""
        if "start" not in self.edges or "end" not in self.edges:
            return {"cpu_us": None, "worker_cpu": None, "other_cpu": None}
        (t0, cpu0, (busy0, all0)), (t1, cpu1, (busy1, all1)) = (
            self.edges["start"],
            self.edges["end"],
        )
        wall, spent = max(t1 - t0, 1e-9), cpu1 - cpu0
        workers = min(1.0, spent / wall / cores())
        machine = (busy1 - busy0) / (all1 - all0) if all1 > all0 else 0.0
        return {
            "cpu_us": spent * 1e6 / (load.per_s * wall) if load.per_s else 0.0,
            "worker_cpu": workers,
            "other_cpu": max(0.0, min(1.0, machine - workers - load.cpu_share)),
        }


def _port_pair() -> int:
    """A port free now whose next is free too: a worker's web port and its peer port."""
    for _ in range(100):
        port = free_port()
        if port + PEER_PORT_OFFSET < 65536 and port_is_free("127.0.0.1", port + PEER_PORT_OFFSET):
            return port
    raise StackError("found no free port with a free port next to it")


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
    """One run: services, the entities, then each fleet's scenarios."""

    def __init__(
        self,
        settings: Settings,
        customers: int,
        concurrency: int,
        duration: float,
        warmup: float,
        *,
        production: bool = True,
        load_process: str = "bench",
    ) -> None:
        super().__init__(settings, events=0)
        if load_process not in LOAD_PROCESSES:
            raise ValueError(f"load_process must be one of {LOAD_PROCESSES}")
        self.customers = customers
        self.concurrency = concurrency
        self.duration = duration
        self.warmup = warmup
        self.production = production
        """The workers in the production configuration (else: the benches' old one)."""
        self.load_process = load_process
        self.records = _records(customers)
        # Names this run's keys in a shared Redis: another run's entries are not its own.
        self.run_id = secrets.token_hex(4)
        self.auth_headers: dict[str, str] = {}
        """The bearer token of the fleet with authentication on (set when it starts)."""
        self.fleet_secret = secrets.token_urlsafe(32)
        self.peer_offset = 0
        """The running fleet's ``MESH_PEER_PORT_OFFSET`` (0: peer endpoints on the web port)."""
        self._issuer: DevIssuer | None = None
        self._token = ""

    def _bearer(self) -> dict[str, str]:
        """The ``Authorization`` header with the dev issuer's token, for the tenant and every
        scope a field policy names (the same queries answer the same data); one token for
        all requests, as a real client sends it again and again."""
        if self._issuer is None:
            self._issuer = DevIssuer.in_dir(self.root / "issuer")
            scopes = sorted(
                {s for e in self.domain.entities.values() for f in e.fields.values()
                 for s in f.requires_scopes}
            )  # fmt: skip
            self._token = self._issuer.mint(
                self.domain.tenants[0], scopes=tuple(scopes), subject="bench", ttl_s=6 * 3600
            )
        return {"Authorization": f"Bearer {self._token}"}

    def _auth_env(self) -> dict[str, str]:
        """A worker's settings for authentication on with the dev issuer's tokens."""
        self._bearer()
        assert self._issuer is not None
        return {**self._issuer.worker_env(), "MESH_FLEET_SECRET": self.fleet_secret}

    def production_env(self) -> dict[str, str]:
        """A worker's settings in the production configuration (module docstring): what
        ``deploy/base`` sets but for the services' addresses, with the dev issuer's key
        and this run's OTLP sink (which :meth:`run_scenarios` starts)."""
        return {
            **self._auth_env(),
            "MESH_AUDIT_LOG": "true",
            "MESH_LOG_LEVEL": "info",
            "MESH_PEER_PORT_OFFSET": str(PEER_PORT_OFFSET),
            "MESH_RATE_LIMIT_PER_S": str(RATE_LIMIT_PER_S),
            **trace_env("default", self.sink_url),
        }

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
        self,
        count: int,
        env: dict[str, str] | None = None,
        tag: str = "",
        *,
        redis_url: str | None = None,
    ) -> tuple[list[ManagedProcess], list[str]]:
        """Start a fleet of ``count`` workers with ``env`` (``MESH_PEER_PORT_OFFSET`` there
        puts the peer endpoints on their own port), sharing cross-worker reads through
        ``redis_url`` (``None``: no Redis, whatever this process's environment says);
        wait until it materialised the entities; return the workers and their web URLs."""
        env = env or {}
        self.peer_offset = int(env.get("MESH_PEER_PORT_OFFSET", "0"))
        procs, urls = [], []
        fleet = f"{count}{tag}"
        for n in range(count):
            port = _port_pair() if self.peer_offset else free_port()
            proc = self._worker(self.root / f"workers-{fleet}" / f"w{n}", port)
            assert proc.env is not None
            # A consumer group per fleet: the new fleet reads the topics afresh.
            proc.env.update({"MESH_APP_ID": f"bench-graphql-{fleet}-{self.run_id}",
                             "MESH_WORKER_NAME": f"w{n}", **env})  # fmt: skip
            if redis_url is not None:  # cross-worker reads shared in Redis
                proc.env["MESH_REDIS_URL"] = redis_url
            elif "MESH_REDIS_URL" in os.environ:  # the child inherits it: unset it there
                proc.argv = ["env", "-u", "MESH_REDIS_URL", *proc.argv]  # env execs: same pid
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

    async def _warm(self, spec: LoadSpec) -> tuple[int, str | None]:
        """Send each of ``spec``'s bodies once to each of its URLs, with ``spec``'s headers
        and concurrency: the load sends every body to every worker (each client takes the
        URLs in turn) and each worker has its own response cache, so afterwards a cached
        scenario's requests all find a stored response, whatever the time-based warm-up.
        Returns how many failed (as the load counts them) and the first failure."""
        pairs = iter([(url, body) for body in spec.bodies for url in spec.urls])
        headers = {"Content-Type": "application/json", **spec.headers}
        failed: list[str] = []

        async def client(http: aiohttp.ClientSession) -> None:
            for url, body in pairs:  # shared: each pair is sent by one client only
                try:
                    async with http.post(url, data=body, headers=headers) as resp:
                        answer = await resp.read()
                        if resp.status != 200:
                            failed.append(f"HTTP {resp.status}: {answer[:200]!r}")
                        elif spec.graphql and (b'"errors"' in answer or b'"data"' not in answer):
                            failed.append(f"GraphQL error: {answer[:200]!r}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failed.append(f"{type(exc).__name__}: {exc}")

        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            await asyncio.gather(*(client(http) for _ in range(max(1, spec.concurrency))))
        return len(failed), (f"warming the cache: {failed[0]}" if failed else None)

    async def _run(
        self, procs: list[ManagedProcess], spec: LoadSpec, *, warm: bool = False
    ) -> tuple[LoadResult, CpuFigures]:
        """``spec``'s load (in this process or a separate one, per ``load_process``), and
        the workers' and the rest's CPU over its measured window. ``warm`` (the cached
        scenarios): :meth:`_warm` first, its failures counted as the load's errors."""
        failed, first = await self._warm(spec) if warm else (0, None)
        window = _Window(procs)
        load = await run_load(spec, process=self.load_process, on_window=window)
        load.errors += failed
        load.first_error = first or load.first_error
        return load, window.figures(load)

    def _warmed(self, query: str, workers: int) -> str:
        """How :meth:`_warm` warms ``query``'s cached scenario on ``workers`` worker(s)."""
        what = f"each of the {self.customers} ids" if query == "by-id" else "the query"
        return f"{what} asked once on {'each worker' if workers > 1 else 'the worker'} first"

    def _spec(
        self, urls: list[str], bodies: list[bytes], headers: dict[str, str] | None = None
    ) -> LoadSpec:
        return LoadSpec(
            urls=urls, bodies=bodies, concurrency=self.concurrency, warmup=self.warmup,
            duration=self.duration, headers=dict(headers or {}),
        )  # fmt: skip

    def _by_id(self) -> list[bytes]:
        return [
            json.dumps({"query": BY_ID, "variables": {"id": str(c)}}).encode()
            for c in range(1, self.customers + 1)
        ]

    async def _measure(
        self,
        urls: list[str],
        procs: list[ManagedProcess],
        *,
        redis: bool = False,
        only: Sequence[str] = SCENARIOS,
    ) -> list[Scenario]:
        """The baseline, then the ``only`` scenarios, on the running fleet."""
        fleet = f"{len(urls)} worker(s), Redis {'on' if redis else 'off'}"
        common: dict[str, Any] = {
            "workers": len(urls), "redis": redis, "production": self.production,
            "concurrency": self.concurrency, "load_process": self.load_process,
        }  # fmt: skip
        token = " with the bearer token" if self.production else ""
        print(f"  baseline, {fleet}: POST {WHOAMI_PATH}{token}", flush=True)
        spec = self._spec([url + WHOAMI_PATH for url in urls], [b"{}"], self.auth_headers)
        spec.graphql = False
        load, figures = await self._run(procs, spec)
        out = [Scenario(BASELINE, load=load, cached=False, auth=self.production, **figures,
                        **common)]  # fmt: skip
        targets = [f"{url}/graphql" for url in urls]
        queries = (("by-id", self._by_id()), ("nested", [json.dumps({"query": NESTED}).encode()]))
        for name, bodies in queries:
            for cached in (True, False):
                if selection(name, cached) not in only:
                    continue
                how = "cached" if cached else "uncached (Cache-Control: no-cache)"
                warmed = f"{self._warmed(name, len(urls))}, then " if cached else ""
                print(f"  {name}, {how}, {fleet}: {warmed}{self.warmup:g} s warm-up, "
                      f"{self.duration:g} s measured", flush=True)  # fmt: skip
                headers = {**self.auth_headers, **({} if cached else NO_CACHE)}
                spec = self._spec(targets, bodies, headers)
                load, figures = await self._run(procs, spec, warm=cached)
                out.append(Scenario(name, load=load, cached=cached, auth=self.production,
                                    **figures, **common))  # fmt: skip
        return out

    async def _measure_auth(self, rounds: int = 2, redis_url: str | None = None) -> list[Scenario]:
        """By id, cached, on one worker without and with authentication (the dev issuer's
        token, one for all requests as a real client sends it again and again), each on a
        fresh worker, alternated ``rounds`` times: figures taken at different moments of a
        shared machine differ by more than what is compared. Only authentication differs:
        logs at warning, tracing as the environment says."""
        by_id = self._by_id()
        saved, out = self.auth_headers, []
        try:
            for n in range(rounds):
                for auth in (False, True):
                    self.auth_headers = self._bearer() if auth else {}
                    print(f"  by-id, cached, a new worker, authentication "
                          f"{'on' if auth else 'off'} (round {n + 1} of {rounds}): "
                          f"{self._warmed('by-id', 1)}", flush=True)  # fmt: skip
                    env = self._auth_env() if auth else {"MESH_AUTH": "off"}
                    procs, urls = await self._start_workers(
                        1, env=env, tag=f"-ab{n}{int(auth)}", redis_url=redis_url
                    )
                    spec = self._spec([f"{urls[0]}/graphql"], by_id, self.auth_headers)
                    load, figures = await self._run(procs, spec, warm=True)
                    for proc in procs:
                        await proc.stop()
                    out.append(Scenario(AUTH_AB, 1, load, cached=True, auth=auth,
                                        concurrency=self.concurrency,
                                        load_process=self.load_process,
                                        redis=redis_url is not None, **figures))  # fmt: skip
        finally:
            self.auth_headers = saved
        return out

    async def _measure_tracing(self, rounds: int) -> list[Scenario]:
        """By id cached, nested cached and uncached, on one fresh worker per tracing mode and
        round; the modes rotate as in ``mesh bench ingest --tracing`` (round ``r`` starts
        with mode ``r mod 3``). The requests carry no ``traceparent``: the worker's sampler
        decides, as for a client that does not trace. Authentication off."""
        by_id = self._by_id()
        nested = [json.dumps({"query": NESTED}).encode()]
        queries = (
            ("by-id", True, by_id),
            ("nested", True, nested),
            ("nested", False, nested),  # executed: operation and loader spans too
        )
        redis_url = self.settings.redis_url.get_secret_value() if self.settings.redis_url else None
        out = []
        for n in range(rounds):
            for mode in TRACING_MODES[n % 3 :] + TRACING_MODES[: n % 3]:
                print(f"  a new worker, tracing {mode} (round {n + 1} of {rounds}): by-id "
                      f"cached ({self._warmed('by-id', 1)}), nested cached "
                      f"({self._warmed('nested', 1)}) and uncached", flush=True)  # fmt: skip
                tag = f"-tr{n}{TRACING_MODES.index(mode)}"
                env = trace_env(mode, self.sink_url)
                procs, urls = await self._start_workers(1, env=env, tag=tag, redis_url=redis_url)
                for name, cached, bodies in queries:
                    before = await self.sink_stats()
                    spec = self._spec([f"{urls[0]}/graphql"], bodies, None if cached else NO_CACHE)
                    load, figures = await self._run(procs, spec, warm=cached)
                    spans = (await self.sink_stats())["spans"] - before["spans"]
                    out.append(Scenario(name, 1, load, cached=cached, tracing=mode,
                                        round=n + 1, spans=spans, concurrency=self.concurrency,
                                        load_process=self.load_process, **figures))  # fmt: skip
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
        self,
        worker_counts: Sequence[int] = (1, 2),
        *,
        auth_rounds: int = 2,
        redis: Sequence[str | None] | None = None,
        only: Sequence[str] = SCENARIOS,
    ) -> list[Scenario]:
        """Start the services (and, for the production configuration, the OTLP sink), load
        the entities, then for each worker count and each Redis of ``redis`` (``None``:
        without; unset: :func:`redis_choice`'s default) start a fleet and measure the
        baseline and the ``only`` scenarios on it; then the cached read by id without and
        with authentication, ``auth_rounds`` times; clean up."""
        configs = tuple(redis) if redis is not None else redis_choice(None, self.settings)
        unknown = set(only) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {SCENARIOS}")
        try:
            await self._start_services()
            if self.production:
                await self._start_sink()
                self.auth_headers = self._bearer()
            await self._load_entities()
            out: list[Scenario] = []
            for count in worker_counts:
                for redis_url in configs:
                    with_redis = redis_url is not None
                    print(f"starting {count} worker(s), Redis {'on' if with_redis else 'off'}, "
                          "and waiting for the entities …", flush=True)  # fmt: skip
                    env = self.production_env() if self.production else {}
                    tag = "-redis" if with_redis else ""
                    before = await self.sink_stats() if self.production else {}
                    procs, urls = await self._start_workers(
                        count, env=env, tag=tag, redis_url=redis_url
                    )
                    measured = await self._measure(urls, procs, redis=with_redis, only=only)
                    for proc in procs:
                        await proc.stop()  # the SDK exports what it still holds at exit
                    if self.production:
                        after = await self.sink_stats(settle=1.0)
                        measured[0].spans = after["spans"] - before["spans"]
                    out += measured
            if auth_rounds:
                out += await self._measure_auth(auth_rounds, redis_url=configs[-1])
            return out
        finally:
            for proc in reversed(self.procs):
                await proc.stop()
            shutil.rmtree(self.root, ignore_errors=True)


def target(s: Scenario, ratio: float | None) -> tuple[str, bool | None]:
    """The issue's target for ``s`` (:data:`TARGETS`) and whether ``ratio`` (to its
    fleet's baseline) meets it; ``("", None)`` for a scenario without one. Any error: not
    met."""
    goal = TARGETS.get((s.workers, s.query, s.cached))
    if goal is None:
        return "", None
    ok = s.load.requests > 0 and not s.load.errors and ratio is not None and ratio >= goal
    what = f"≥ {goal:g}"
    if (s.query, s.cached) == ("nested", False):
        if s.concurrency == NESTED_P99_CONCURRENCY:
            what += f", p99 ≤ {NESTED_P99_MS:g} ms"
            ok = ok and s.load.p99_ms <= NESTED_P99_MS
        else:
            what += f" (p99 ≤ {NESTED_P99_MS:g} ms: at --concurrency {NESTED_P99_CONCURRENCY})"
    return what, ok


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(scenarios: list[Scenario]) -> list[str]:
    """The report's lines: a table with a row per scenario (its fleet's baseline first),
    the CPU columns explained, then per worker process for more than one, the first
    errors, and the authentication A/B."""
    rows = [s for s in scenarios if s.query != AUTH_AB]
    lines: list[str] = []
    if rows:
        where = {"bench": "this (the bench's) process", "separate": "a separate process"}
        lines.append(
            f"load generated in {where.get(rows[0].load_process, rows[0].load_process)}, "
            f"{rows[0].concurrency} requests in flight; CPU columns: share of the machine's "
            f"{cores()} cores in the measured window (workers, load generator, everything else)"
        )
        lines.append(
            f"{'scenario':<16} {'workers':>7} {'redis':<5} {'requests/s':>10} "
            f"{'per worker':>10} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6} {'µs/req':>7} "
            f"{'CPU wk':>6} {'load':>5} {'other':>5}  target"
        )
    baselines = {(s.workers, s.redis): s.load.per_s for s in rows if s.query == BASELINE}
    notes: list[str] = []
    for s in rows:
        ceiling = baselines.get((s.workers, s.redis))
        ratio = s.load.per_s / ceiling if ceiling else None
        goal, met = target(s, ratio)
        verdict = f"{goal}: {'met' if met else 'not met'}" if met is not None else ""
        redis = "on" if s.redis else "off"
        lines.append(
            f"{s.name:<16} {s.workers:>7} {redis:<5} {s.load.per_s:>10,.0f} "
            f"{s.load.per_s / s.workers:>10,.0f} {s.load.p50_ms:>8.2f} {s.load.p99_ms:>8.2f} "
            f"{'-' if ratio is None else f'{ratio:.2f}':>6} "
            f"{'-' if s.cpu_us is None else f'{s.cpu_us:.0f}':>7} {_share(s.worker_cpu):>6} "
            f"{_share(s.load_cpu):>5} {_share(s.other_cpu):>5}  {verdict}".rstrip()
        )
        what = f"{s.name}, {s.workers} worker(s), Redis {redis}"
        if s.workers > 1:
            shares = ", ".join(
                f"{re.sub(r'^http://|/(graphql|api/.*)$', '', url)} {n / s.load.seconds:,.0f}/s"
                for url, n in sorted(s.load.per_target.items())
            )
            notes.append(f"  {what}: requests/s per worker process: {shares}")
        if s.load.errors:
            notes.append(f"  {what}: {s.load.errors} errors, the first: {s.load.first_error}")
        if s.production and s.query == BASELINE:
            notes.append(
                f"  {s.workers} worker(s), Redis {redis}: {s.spans:,} spans exported to the "
                "OTLP sink while the fleet ran (tracing at the default sampler)"
            )
    return lines + notes + _auth_lines([s for s in scenarios if s.query == AUTH_AB])


def _auth_lines(runs: list[Scenario]) -> list[str]:
    """The authentication A/B: each run, then the mean ratio of on to off."""
    if not runs:
        return []
    lines = [
        f"by-id    cached   1 worker(s), auth {'on ' if s.auth else 'off'}: {s.load.per_s:8,.0f} "
        f"requests/s, p50 {s.load.p50_ms:6.2f} ms, p99 {s.load.p99_ms:6.2f} ms, errors "
        f"{s.load.errors}; worker CPU {s.cpu_us or 0:.0f} µs/request; CPU share: workers "
        f"{_share(s.worker_cpu)}, load {_share(s.load_cpu)}, other {_share(s.other_cpu)}"
        + (f"\n        first error: {s.load.first_error}" if s.load.first_error else "")
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


PRODUCTION = (
    "production configuration: authentication on (the dev issuer's RS256 token on every "
    "request, the baseline's too), audit lines written (MESH_LOG_LEVEL=info), the rate "
    "limiter on (at a rate never reached), peer endpoints on their own port, tracing at "
    "the default sampler exporting to a counting OTLP sink"
)
DEV_CONFIG = (
    "dev configuration (--dev-config): authentication off, logs at warning, tracing as the "
    "environment says"
)


def run_graphql(
    settings: Settings,
    duration: float,
    concurrency: int,
    customers: int,
    warmup: float = 2.0,
    *,
    tracing: bool = False,
    rounds: int = 3,
    redis: str | None = None,
    dev_config: bool = False,
    load_process: str = "bench",
    only: Sequence[str] | None = None,
    workers: Sequence[int] = (1, 2),
    auth_rounds: int = 2,
) -> int:
    """``mesh bench graphql``: print the figures; return the exit code (1 on any error).
    ``only``: scenarios of :data:`SCENARIOS` and/or :data:`AUTH_AB_SCENARIO` (unset: all)."""
    where = "in this process" if load_process == "bench" else "in a separate process"
    if tracing:
        print(f"graphql with tracing: {customers} customers, one worker, by id (cached) and "
              f"nested (cached, uncached), {concurrency} requests in flight, tracing off / "
              f"default sampler / 100 % alternated over {rounds} round(s), a fresh worker "
              "each time; requests without traceparent; spans exported to a counting OTLP "
              f"sink. The load client runs {where}, on the same cores as the worker.")  # fmt: skip
        bench = GraphQLBench(settings, customers, concurrency, duration, warmup,
                             load_process=load_process)  # fmt: skip
        scenarios = asyncio.run(bench.run_tracing_scenarios(rounds))
        print("\n".join(tracing_report(scenarios)))
        return 1 if any(s.load.errors for s in scenarios) else 0
    picked = list(only) if only else [*SCENARIOS, AUTH_AB_SCENARIO]
    unknown = sorted(set(picked) - {*SCENARIOS, AUTH_AB_SCENARIO})
    try:
        configs = redis_choice(redis, settings)
        if unknown:
            known = ", ".join([*SCENARIOS, AUTH_AB_SCENARIO])
            raise ValueError(f"--only: unknown {', '.join(unknown)}; known: {known}")
    except ValueError as exc:
        print(f"mesh bench graphql: {exc}", file=sys.stderr)
        return 2
    redis_said = " and ".join("with Redis" if url else "without Redis" for url in configs)
    print(f"graphql: {customers} customers, {PARTITIONS} partitions, customer 1 with "
          f"{INVOICES} invoices x {ITEMS} items; {concurrency} requests in flight; fleets of "
          f"{' and '.join(map(str, workers))} worker(s), each {redis_said}; "
          f"{DEV_CONFIG if dev_config else PRODUCTION}. The load client runs {where}, on "
          "the same cores as the workers.")  # fmt: skip
    bench = GraphQLBench(settings, customers, concurrency, duration, warmup,
                         production=not dev_config, load_process=load_process)  # fmt: skip
    scenarios = asyncio.run(
        bench.run_scenarios(
            tuple(workers),
            auth_rounds=auth_rounds if AUTH_AB_SCENARIO in picked else 0,
            redis=configs,
            only=[p for p in picked if p in SCENARIOS],
        )
    )
    print("\n".join(report(scenarios)))
    return 1 if any(s.load.errors for s in scenarios) else 0
