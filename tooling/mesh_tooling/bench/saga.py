"""``mesh bench saga``: place-order sagas/s and p50/p99 completion time, against the ceiling
of the same Directus requests sent without the engine, measured in the same run.

Self-contained like ``mesh bench graphql`` (whose broker, registry and worker helpers it
reuses from :class:`~mesh_tooling.bench.ingest.IngestBench`): it starts a broker, the schema
registry, a Directus 10.10 of its own on a fresh database (of the Postgres server at
``MESH_DATABASE_URL``, else 127.0.0.1:5432, else a throwaway cluster) seeded with the sample
domain's collections, the adapters' read-only user and the sagas' writing one, and
``--workers`` workers following it, which accept a dev issuer's tokens (the bench's carries
``orders:write``). It makes its own customers and products (stock enough that no order is
refused) and waits until the catalog holds them. After a warm-up of both paths it measures,
over ``--rounds`` (the two alternated, round 1 starting with the ceiling):

* sagas: ``--sagas`` orders of ``--lines`` distinct products each (1 to 3 units) placed by
  ``--concurrency`` clients through GraphQL ``placeOrder``, each client waiting for its
  saga's final transition on ``sagas.dictamesh.saga_changed`` before placing its next;
  completion time is from ``placeOrder`` sent to that event received; afterwards every
  saga's status is read back through GraphQL ``saga(id)``;
* ceiling: the same orders at the same concurrency, each running the place-order saga's
  own Directus steps (``reserve_stock`` through a :class:`~mesh.sagas.stock.StockKeeper`
  with its one-writer-per-product locks, ``create_invoice``, ``issue_invoice``) in this
  process with the sagas' token: the same requests in the same order, without the engine
  (no changelog, no transition events, no peer hops, no catalog check).

The report gives per phase the rate, p50/p99, the Directus writes per order (from
Directus' activity log: the two paths must make the same), where an order's time went (the
ceiling's steps; a saga's steps, transitions and hops from its history, see
:func:`timeline`) and the CPU each process spent per order: this load client, the workers,
Directus, the bench database's Postgres backends, the broker, and what else ran on the
machine meanwhile (a shared machine's other load shows there); then the ratio of the two
rates per round (target ≥ :data:`TARGET`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import random
import secrets
import shutil
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import psycopg2
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry
from psycopg2 import sql
from pydantic import SecretStr

from mesh.catalog.reader import CatalogReader
from mesh.codec import AvroEventCodec, RegistryClient
from mesh.errors import StackError
from mesh.graphql.sagas import ORDERS_WRITE
from mesh.retry import RetryPolicy
from mesh.sagas.definition import StepContext
from mesh.sagas.events import SAGA_CHANGED_SCHEMA, SAGA_CHANGED_TOPIC
from mesh.sagas.faults import FaultPoints
from mesh.sagas.ids import saga_id
from mesh.sagas.metrics import SagaMetrics
from mesh.sagas.place_order import OrderServices, place_order, validate_order
from mesh.sagas.state import SagaState
from mesh.sagas.stock import StockKeeper
from mesh.sources.directus.client import DirectusAuth
from mesh.sources.directus.client import DirectusClient as SagaDirectus
from mesh_tooling.bench.ingest import IngestBench
from mesh_tooling.bench.load import LoadResult
from mesh_tooling.dev.directus import (
    SAGA_EMAIL,
    DirectusClient,
    DirectusService,
    DirectusSettings,
    ensure_installed,
    generate_service_token,
    seed_directus,
)
from mesh_tooling.dev.issuer import DevIssuer
from mesh_tooling.dev.postgres import can_connect, ensure_database, start_throwaway_postgres
from mesh_tooling.dev.process import ManagedProcess, free_port
from mesh_tooling.dev.readiness import wait_until_following
from mesh_tooling.settings import DevSettings

SAGA_TYPE = "place_order"
CATALOG_STEP = "check_order"
"""The one step that reads the catalog, not Directus: the ceiling leaves it out."""
FINAL = ("COMPLETED", "COMPENSATED", "FAILED_COMPENSATION")
SAGAS, CEILING = "sagas", "ceiling"
TARGET = 0.8
"""Sagas/s as a share of the ceiling's, measured in the same run."""
STOCK = 1_000_000
"""Each product's stock: no order is ever refused for want of it."""
MAX_UNITS = 3
"""Units per line: 1 to this many."""
PER_QUERY = 25
"""Entities asked per catalog check (GraphQL allows 30 aliases in a query)."""
FINAL_WAIT_S = 120.0
"""A saga not final this long after it was placed counts as an error."""
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
PLACE = "mutation ($input: PlaceOrderInput!) { placeOrder(input: $input) { id status } }"
STATUS = "query ($id: ID!) { saga(id: $id) { status error } }"
HISTORY = "query ($id: ID!) { saga(id: $id) { status history { at event step } } }"
PLACED, BETWEEN, SEEN = "placeOrder → STARTED", "between steps", "COMPLETED → seen"
"""Parts of a saga's time besides its steps (see :func:`timeline`)."""


def say(message: str) -> None:
    print(f"  {message}", flush=True)


@dataclass(frozen=True)
class Order:
    """One order: a customer and ``(product, units)`` lines."""

    customer: int
    lines: tuple[tuple[int, int], ...]

    def as_input(self) -> dict[str, Any]:
        """``placeOrder``'s input, less the idempotency key."""
        return {
            "customer": str(self.customer),
            "lines": [{"product": str(p), "quantity": q} for p, q in self.lines],
        }


def make_orders(
    count: int, lines: int, customers: Sequence[int], products: Sequence[int], seed: int
) -> list[Order]:
    """``count`` orders of ``lines`` distinct products each, drawn with ``seed``."""
    rng = random.Random(seed)
    return [
        Order(
            rng.choice(customers),
            tuple((p, rng.randint(1, MAX_UNITS)) for p in rng.sample(list(products), lines)),
        )
        for _ in range(count)
    ]


@dataclass(frozen=True)
class DirectusTarget:
    """The bench's Directus, seeded with the sample domain and both service users."""

    url: str
    admin_email: str
    admin_password: str = field(repr=False)
    service_token: str = field(repr=False)
    saga_token: str = field(repr=False)


# -- CPU -----------------------------------------------------------------------------------


def _ticks(pid: int) -> int:
    """User + system CPU ticks of ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])


def _machine_ticks() -> int:
    """CPU ticks the whole machine spent busy (neither idle nor waiting for I/O)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values[:8]) - values[3] - values[4]


def listener_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` on this machine, if it can be found."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


def _label(pid: int) -> str:
    """A short name for a process: its command without paths (``pytest -q``,
    ``python -m mesh worker``, ``postgres: postgres dictamesh idle``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "(gone)"
    words = " ".join(argv).split()
    if not words:
        return "(kernel)"
    words[0] = words[0].rsplit("/", 1)[-1]
    if words[0].startswith("python") and len(words) > 1 and words[1] != "-m":
        words = [words[1].rsplit("/", 1)[-1], *words[2:]]
    return " ".join(words[:4])[:48]


def postgres_backends(database: str) -> list[int]:
    """The Postgres backends serving ``database`` (by their process titles)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                title = (proc / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
                # "postgres: [cluster: ]user database host(port) state"
                if title.startswith("postgres: ") and database in title.split()[1:5]:
                    found.append(int(proc.name))
    return found


def _all_ticks() -> dict[int, int]:
    return {int(p.name): _ticks(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}


@dataclass
class _CpuSample:
    started: float
    machine: int
    ticks: dict[int, int]


class CpuMeter:
    """CPU seconds per process group between :meth:`start` and :meth:`stop`, and what the
    rest of the machine spent (``other``, its biggest consumers by command)."""

    def __init__(self, groups: Callable[[], dict[str, list[int]]]) -> None:
        self.groups = groups
        self.hz = os.sysconf("SC_CLK_TCK")

    def start(self) -> _CpuSample:
        return _CpuSample(time.monotonic(), _machine_ticks(), _all_ticks())

    def stop(self, sample: _CpuSample) -> tuple[dict[str, float], list[tuple[str, float]]]:
        """CPU seconds per group, ``other``, ``machine`` and ``wall``; and the other
        processes' CPU seconds by command, most first."""
        now = _all_ticks()
        machine = (_machine_ticks() - sample.machine) / self.hz
        delta = {pid: max(0, t - sample.ticks.get(pid, 0)) for pid, t in now.items()}
        out: dict[str, float] = {}
        for name, pids in self.groups().items():
            out[name] = sum(delta.pop(pid, 0) for pid in set(pids)) / self.hz
        others: dict[str, float] = {}
        for pid, ticks in delta.items():
            if ticks:
                label = _label(pid)
                others[label] = others.get(label, 0.0) + ticks / self.hz
        out["other"] = max(0.0, machine - sum(out.values()))
        out["machine"] = machine
        out["wall"] = time.monotonic() - sample.started
        return out, sorted(others.items(), key=lambda item: -item[1])


# -- the two paths -------------------------------------------------------------------------


@dataclass
class Phase:
    """One measured pass of one path over the orders."""

    path: str
    """:data:`SAGAS` or :data:`CEILING`."""
    round: int
    orders: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    """Sagas: final statuses from the transition events; ceiling: COMPLETED per order run."""
    statuses: Counter[str] = field(default_factory=Counter)
    """Sagas: the statuses GraphQL ``saga(id)`` answered afterwards."""
    errors: int = 0
    first_error: str | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)
    other_cpu_s: list[tuple[str, float]] = field(default_factory=list)
    """The other processes' CPU seconds in the phase by command, most first."""
    writes: Counter[str] = field(default_factory=Counter)
    """Directus writes of the sagas' user in the phase, ``"<collection> <action>"``."""
    requests: Counter[str] = field(default_factory=Counter)
    """Ceiling: the Directus requests sent, ``"<method> <collection>"``."""
    parts_ms: dict[str, list[float]] = field(default_factory=dict)
    """Where each order's time went (see :func:`timeline`), by part."""
    transitions_ms: list[float] = field(default_factory=list)
    """Sagas: each transition persisted and published between two steps."""

    @property
    def window(self) -> LoadResult:
        """The phase as a measured window of :mod:`~mesh_tooling.bench.load` (an order
        carried to its end is a correct answer): its count, rate and percentiles."""
        return LoadResult(self.seconds, self.latencies_ms)

    @property
    def finished(self) -> int:
        return self.window.requests

    @property
    def per_s(self) -> float:
        """Orders carried to their end per second."""
        return self.window.per_s

    @property
    def p50_ms(self) -> float:
        return self.window.p50_ms

    @property
    def p99_ms(self) -> float:
        return self.window.p99_ms

    def fail(self, error: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or error


class CountingDirectus(SagaDirectus):
    """The sagas' Directus client, counting the calls the saga steps make, by method and
    collection (``GET reservations``: a read by query)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()

    async def items_where(
        self, collection: str, where: dict[str, Any], *, fields: str = "*", limit: int = -1
    ) -> list[dict[str, Any]]:
        self.calls[f"GET {collection}"] += 1
        return await super().items_where(collection, where, fields=fields, limit=limit)

    async def create_item(self, collection: str, values: dict[str, Any]) -> dict[str, Any]:
        self.calls[f"POST {collection}"] += 1
        return await super().create_item(collection, values)

    async def update_item(
        self, collection: str, item_id: str | int, values: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls[f"PATCH {collection}"] += 1
        return await super().update_item(collection, item_id, values)


class DirectSagas:
    """The place-order saga's Directus steps run in this process, without the engine: the
    same step functions with a :class:`StockKeeper` of its own (locks, first-touch settle)
    and the sagas' own Directus client, as a worker makes it."""

    def __init__(self, client: CountingDirectus, tenant: str, prices: dict[str, str]) -> None:
        self.client = client
        self.tenant = tenant
        self.prices = prices
        self.stock = StockKeeper(
            lambda _tenant: client, SagaMetrics(CollectorRegistry()), FaultPoints(None, None)
        )
        services = OrderServices(
            reader=cast(CatalogReader, None),  # only the catalog step reads it: left out
            writer=lambda _tenant: client,
            stock=self.stock.handle,  # what the product's owner does (Sagas.stock_local)
        )
        self.services = services
        definition = place_order(lambda: services, deadline_s=60.0)
        self.steps = [s for s in definition.steps if s.name != CATALOG_STEP]
        if len(self.steps) != len(definition.steps) - 1:
            raise StackError(f"the place-order saga has no step {CATALOG_STEP!r} any more")

    async def place(self, order: Order) -> dict[str, float]:
        """Run the order's Directus steps one after the other, as the engine would; the
        milliseconds each took."""
        state = SagaState(
            str(uuid.uuid4()), SAGA_TYPE, self.tenant, validate_order(order.as_input()),
            deadline_at=time.time() + 60,
        )  # fmt: skip
        products = [line["product"] for line in state.input["lines"]]
        state.data[CATALOG_STEP] = {"prices": {p: self.prices[p] for p in products}}
        took = {}
        for step in self.steps:
            started = time.perf_counter()
            result = await step.action(StepContext(state, step.name, self.services))
            took[step.name] = (time.perf_counter() - started) * 1000
            state.data[step.name] = result or {}
        return took


class _Finals:
    """Final transitions of sagas from ``sagas.dictamesh.saga_changed``, as they arrive."""

    def __init__(self, codec: AvroEventCodec) -> None:
        self.codec = codec
        self.waiting: dict[str, asyncio.Future[tuple[str, float, float]]] = {}

    def expect(self, sid: str) -> asyncio.Future[tuple[str, float, float]]:
        """The saga's final event and when it was received (``perf_counter``, Unix)."""
        future = self.waiting.get(sid)
        if future is None:
            future = self.waiting[sid] = asyncio.get_running_loop().create_future()
        return future

    async def consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now, unix = time.perf_counter(), time.time()
            for messages in batch.values():
                for message in messages:
                    event = self.codec.loads(message.value)
                    if event["event"] in FINAL:
                        future = self.expect(event["saga_id"])
                        if not future.done():
                            future.set_result((event["event"], now, unix))


def timeline(
    history: list[dict[str, Any]], sent: float, seen: float
) -> tuple[dict[str, float], list[float]]:
    """Where one saga's time went, in ms, from its history (Unix ``at`` of each
    transition) and the Unix times it was placed and seen final: :data:`PLACED`; each step,
    from its ``STEP_STARTED`` being recorded to the next transition (that transition
    persisted and published, then the action), a failed attempt's wait before the next
    included; :data:`BETWEEN`, the other intervals, each a transition recorded, persisted
    and published before the next step starts (also returned one by one); and
    :data:`SEEN`, the final transition recorded, persisted, published and received."""
    parts = {PLACED: (history[0]["at"] - sent) * 1000, BETWEEN: 0.0}
    gaps = []
    for a, b in itertools.pairwise(history):
        ms = (b["at"] - a["at"]) * 1000
        retry = a["event"] == "STEP_FAILED" and b["event"] == "STEP_STARTED"
        if a["event"] == "STEP_STARTED" or (retry and a["step"] == b["step"]):
            parts[a["step"]] = parts.get(a["step"], 0.0) + ms
        else:
            parts[BETWEEN] += ms
            gaps.append(ms)
    parts[SEEN] = (seen - history[-1]["at"]) * 1000
    return parts, gaps


# -- the bench -----------------------------------------------------------------------------


@dataclass
class SagaRun:
    """What one run measured, and how."""

    sagas: int
    concurrency: int
    lines: int
    workers: int
    products: int
    phases: list[Phase]
    warmup: int
    setup_s: float


class SagaBench(IngestBench):
    """One run: services, its customers and products, warm-up, then the rounds."""

    def __init__(
        self,
        settings: DevSettings,
        *,
        sagas: int = 120,
        concurrency: int = 8,
        lines: int = 2,
        workers: int = 2,
        products: int = 50,
        customers: int = 10,
        rounds: int = 2,
        warmup: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(settings, events=0)
        if not 1 <= lines <= products:
            raise StackError(f"--lines must be 1 to --products ({products}), got {lines}")
        self.dev = settings
        self.sagas = sagas
        self.concurrency = concurrency
        self.lines = lines
        self.worker_count = workers
        self.product_count = products
        self.customer_count = customers
        self.rounds = rounds
        self.warmup = min(sagas, 2 * concurrency) if warmup is None else warmup
        self.seed = seed
        self.run_id = secrets.token_hex(4)
        self.source = next(
            s for s in self.domain.sources if s.kind == "directus" and s.tenant == "default"
        )
        self.tenant = self.source.tenant
        self.issuer = DevIssuer.in_dir(self.root / "issuer")
        self.headers = {
            "Authorization": "Bearer "
            + self.issuer.mint(
                self.tenant, scopes=(ORDERS_WRITE,), subject="bench-saga", ttl_s=6 * 3600
            )
        }
        self.workers: list[ManagedProcess] = []
        self.urls: list[str] = []
        self.broker: ManagedProcess | None = None
        self.directus_pid: int | None = None
        self.database: str | None = None
        """The Directus database's name (its Postgres backends' CPU is counted)."""
        self.admin: DirectusClient | None = None
        self.saga_user: str | None = None
        self.finals: _Finals | None = None
        self.direct: DirectSagas | None = None
        self._gql: aiohttp.ClientSession | None = None
        self._turn = 0

    # -- services --------------------------------------------------------------------------

    async def _postgres(self) -> str:
        if self.dev.database_url is not None:
            return self.dev.database_url.get_secret_value()
        if await asyncio.to_thread(can_connect, LOCAL_POSTGRES):
            return LOCAL_POSTGRES
        port = free_port()
        say(f"no Postgres at MESH_DATABASE_URL or 127.0.0.1:5432: a throwaway one on {port}")
        proc = await start_throwaway_postgres("127.0.0.1", port, self.root)
        self.procs.append(proc)
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    async def _own_directus(self, cleanup: contextlib.AsyncExitStack) -> DirectusTarget:
        """Directus on a fresh database, seeded without sample rows; stopped and its
        database dropped by ``cleanup``."""
        server = await self._postgres()
        name = self.database = f"dictamesh_bench_saga_{self.run_id}"
        database = ensure_database(server, name)
        cleanup.callback(_drop_database, server, name)
        install = await ensure_installed(self.dev.cache_dir, progress=say)
        email = self.dev.directus_admin_email
        password = self.dev.directus_admin_password.get_secret_value()
        service = DirectusService(
            DirectusSettings(
                install_dir=install, database_url=database, state_dir=self.root / "directus",
                admin_email=email, admin_password=password, port=free_port(),
            )
        )  # fmt: skip
        say(f"bootstrapping and starting Directus on {service.url} (database {name})")
        await service.bootstrap()
        cleanup.push_async_callback(service.stop)
        await service.start()
        target = DirectusTarget(
            service.url, email, password, generate_service_token(), generate_service_token()
        )
        await seed_directus(
            target.url, email, password, self.domain, service_token=target.service_token,
            saga_token=target.saga_token, rows=False, source=self.source.name,
        )  # fmt: skip
        return target

    async def _start_workers(self, target: DirectusTarget) -> None:
        env = {
            **self.issuer.worker_env(),
            "MESH_FLEET_SECRET": secrets.token_urlsafe(32),
            "MESH_APP_ID": f"bench-saga-{self.run_id}",
            "MESH_DIRECTUS_URL": target.url,
            "MESH_DIRECTUS_TOKEN": target.service_token,
            "MESH_DIRECTUS_WRITE_TOKEN": target.saga_token,
        }
        for n in range(self.worker_count):
            port = free_port()
            proc = self._worker(self.root / f"w{n}", port, **env, MESH_WORKER_NAME=f"w{n}")
            await proc.start()
            self.procs.append(proc)
            self.workers.append(proc)
            self.urls.append(f"http://127.0.0.1:{port}")
        await wait_until_following(self.urls, [self.source.name], timeout=300, say=say)
        await self._wait_stable()

    async def _wait_stable(self, timeout: float = 120.0) -> None:
        """Every worker ready and owning partitions."""
        deadline = time.monotonic() + timeout
        last: Any = None
        async with aiohttp.ClientSession(headers=self.headers) as http:
            while time.monotonic() < deadline:
                owning = 0
                for url in self.urls:
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                        async with http.get(f"{url}/readyz") as resp:
                            last = await resp.json(content_type=None)
                            if resp.status == 200 and last.get("active_partitions"):
                                owning += 1
                if owning == len(self.urls):
                    return
                await asyncio.sleep(0.25)
        raise StackError(f"the workers did not all own partitions in {timeout:.0f} s: {last}")

    # -- data --------------------------------------------------------------------------------

    async def _make_data(
        self, admin: DirectusClient
    ) -> tuple[list[int], list[int], dict[str, str]]:
        """This run's customers and products (prices by product id)."""
        rng = random.Random(self.seed)
        products = await admin.request(
            "POST", "/items/products",
            [{"sku": f"BENCH-{self.run_id}-{n}", "name": f"Bench product {n}",
              "price": f"{rng.randint(100, 9999) / 100:.2f}", "stock": STOCK}
             for n in range(self.product_count)],
        )  # fmt: skip
        customers = await admin.request(
            "POST", "/items/customers",
            [{"name": f"Bench buyer {self.run_id} {n}", "status": "active"}
             for n in range(self.customer_count)],
        )  # fmt: skip
        prices = {str(p["id"]): str(p["price"]) for p in products}
        return [int(c["id"]) for c in customers], [int(p["id"]) for p in products], prices

    async def _wait_catalog(self, customers: list[int], products: list[int]) -> None:
        """Until the catalog answers every customer and product through GraphQL (asked
        :data:`PER_QUERY` at a time: a query may hold at most 30 aliases)."""
        wanted = [("customer", c) for c in customers] + [("product", p) for p in products]
        deadline = time.monotonic() + 120
        last: dict[str, Any] = {}
        while wanted:
            chunk = wanted[:PER_QUERY]
            fields = " ".join(f'e{n}: {t}(id: "{i}") {{ id }}' for n, (t, i) in enumerate(chunk))
            last = await self._graphql(f"{{ {fields} }}", {})
            data = last.get("data") or {}
            if all(data.get(f"e{n}") for n in range(len(chunk))):
                del wanted[: len(chunk)]
                continue
            if time.monotonic() > deadline:
                raise StackError(
                    f"the bench's customers and products did not all reach the catalog in "
                    f"120 s; last answer: {json.dumps(last)[:300]}"
                )
            await asyncio.sleep(0.25)

    async def _graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        assert self._gql is not None
        url = self.urls[self._turn % len(self.urls)]
        self._turn += 1
        async with self._gql.post(
            f"{url}/graphql", json={"query": query, "variables": variables}
        ) as resp:
            if resp.status != 200:
                raise StackError(
                    f"POST /graphql answered {resp.status}: {(await resp.text())[:300]}"
                )
            body: dict[str, Any] = await resp.json(content_type=None)
            return body

    # -- measuring ---------------------------------------------------------------------------

    def _groups(self) -> dict[str, list[int]]:
        groups = {
            "client": [os.getpid()],
            "workers": [w.pid for w in self.workers if w.pid is not None],
            "Directus": [self.directus_pid] if self.directus_pid else [],
            "broker": [self.broker.pid] if self.broker and self.broker.pid else [],
        }
        if self.database is not None:
            groups["Postgres"] = postgres_backends(self.database)
        return groups

    async def _activity_head(self) -> int:
        assert self.admin is not None
        rows = await self.admin.request(
            "GET", "/activity", params={"sort": "-id", "limit": "1", "fields": "id"}
        )
        return int(rows[0]["id"]) if rows else 0

    async def _writes(self, after: int, upto: int) -> Counter[str]:
        """The sagas' user's writes with activity ids in ``(after, upto]``."""
        assert self.admin is not None
        where = {"id": {"_gt": after, "_lte": upto}, "user": {"_eq": self.saga_user}}
        rows = await self.admin.request(
            "GET", "/activity",
            params={"filter": json.dumps(where), "fields": "collection,action", "limit": "-1"},
        )  # fmt: skip
        return Counter(f"{r['collection']} {r['action']}" for r in rows)

    async def _measure(
        self, phase: Phase, each: Callable[[int], Awaitable[None]], count: int
    ) -> None:
        """Run ``each(n)`` for ``n`` in ``range(count)`` with ``concurrency`` in flight,
        metering CPU and the Directus writes."""
        meter = CpuMeter(self._groups)
        head = await self._activity_head()
        indices = iter(range(count))

        async def client() -> None:
            for n in indices:
                await each(n)

        sample = meter.start()
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(self.concurrency)))
        phase.seconds = time.perf_counter() - started
        phase.cpu_s, phase.other_cpu_s = meter.stop(sample)
        await asyncio.sleep(0.5)  # the last writes' activity rows
        phase.writes = await self._writes(head, await self._activity_head())

    async def _place(self, order: Order, key: str) -> str:
        """``placeOrder``; the saga's id."""
        answer = await self._graphql(PLACE, {"input": {**order.as_input(), "idempotencyKey": key}})
        if answer.get("errors") or not answer.get("data"):
            raise StackError(f"placeOrder: {json.dumps(answer)[:300]}")
        return str(answer["data"]["placeOrder"]["id"])

    async def _sagas_pass(self, orders: list[Order], round_: int) -> Phase:
        """The orders through the engine, completion times from the transition events."""
        assert self.finals is not None
        finals = self.finals
        phase = Phase(SAGAS, round_, len(orders))
        keys = [f"bench-{self.run_id}-{round_}-{n}" for n in range(len(orders))]
        ids = [saga_id(self.tenant, SAGA_TYPE, key) for key in keys]

        times: dict[str, tuple[float, float]] = {}  # Unix times: placed, seen final

        async def each(n: int) -> None:
            final = finals.expect(ids[n])  # before the saga can end
            sent, sent_unix = time.perf_counter(), time.time()
            try:
                sid = await self._place(orders[n], keys[n])
                if sid != ids[n]:
                    raise StackError(f"placeOrder answered saga {sid}, expected {ids[n]}")
                status, at, at_unix = await asyncio.wait_for(final, FINAL_WAIT_S)
            except (StackError, aiohttp.ClientError, TimeoutError) as exc:
                phase.fail(f"{type(exc).__name__}: {exc}")
                return
            phase.latencies_ms.append((at - sent) * 1000)
            phase.outcomes[status] += 1
            times[ids[n]] = (sent_unix, at_unix)

        await self._measure(phase, each, len(orders))
        await self._read_back(phase, ids, times)
        return phase

    async def _read_back(
        self, phase: Phase, ids: list[str], times: dict[str, tuple[float, float]]
    ) -> None:
        """Each saga's status and history as GraphQL ``saga(id)`` answers them: the
        statuses, and where the time of the sagas seen final went."""
        pending = iter(ids)

        async def client() -> None:
            for sid in pending:
                answer = await self._graphql(HISTORY, {"id": sid})
                saga = (answer.get("data") or {}).get("saga")
                phase.statuses[saga["status"] if saga else "MISSING"] += 1
                if saga and sid in times and saga["history"]:
                    parts, gaps = timeline(saga["history"], *times[sid])
                    for part, ms in parts.items():
                        phase.parts_ms.setdefault(part, []).append(ms)
                    phase.transitions_ms.extend(gaps)

        await asyncio.gather(*(client() for _ in range(self.concurrency)))

    async def _ceiling_pass(self, orders: list[Order], round_: int) -> Phase:
        """The same orders' Directus requests, sent directly."""
        assert self.direct is not None
        direct = self.direct
        phase = Phase(CEILING, round_, len(orders))
        before = Counter(direct.client.calls)

        async def each(n: int) -> None:
            started = time.perf_counter()
            try:
                took = await direct.place(orders[n])
            except Exception as exc:  # counted and shown; the run goes on
                phase.fail(f"{type(exc).__name__}: {exc}")
                return
            phase.latencies_ms.append((time.perf_counter() - started) * 1000)
            phase.outcomes["COMPLETED"] += 1
            for step, ms in took.items():
                phase.parts_ms.setdefault(step, []).append(ms)

        await self._measure(phase, each, len(orders))
        phase.requests = direct.client.calls - before
        return phase

    async def _warm_up(self, orders: list[Order]) -> None:
        """Both paths once over ``orders`` (sagas polled through GraphQL: the transition
        topic exists only once a saga has published on it)."""
        pending = iter(range(len(orders)))

        async def client() -> None:
            for n in pending:
                sid = await self._place(orders[n], f"bench-{self.run_id}-warm-{n}")
                deadline = time.monotonic() + FINAL_WAIT_S
                while time.monotonic() < deadline:
                    answer = await self._graphql(STATUS, {"id": sid})
                    saga = (answer.get("data") or {}).get("saga") or {}
                    if saga.get("status") in FINAL:
                        if saga["status"] != "COMPLETED":
                            raise StackError(f"warm-up saga {sid} ended {saga}")
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise StackError(f"warm-up saga {sid} did not end in {FINAL_WAIT_S:.0f} s")

        await asyncio.gather(*(client() for _ in range(self.concurrency)))
        assert self.direct is not None
        direct = self.direct
        again = iter(range(len(orders)))

        async def direct_client() -> None:
            for n in again:
                await direct.place(orders[n])

        await asyncio.gather(*(direct_client() for _ in range(self.concurrency)))

    async def _follow_finals(self, cleanup: contextlib.AsyncExitStack) -> None:
        """Consume the transition topic from its end, from now on."""
        codec = AvroEventCodec(
            RegistryClient(self.registry_url), f"{SAGA_CHANGED_TOPIC}-value", SAGA_CHANGED_SCHEMA
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
        )
        await consumer.start()
        cleanup.push_async_callback(consumer.stop)
        if SAGA_CHANGED_TOPIC not in await consumer.topics():
            raise StackError(f"no topic {SAGA_CHANGED_TOPIC} after the warm-up's sagas")
        partitions = consumer.partitions_for_topic(SAGA_CHANGED_TOPIC) or {0}
        tps = [TopicPartition(SAGA_CHANGED_TOPIC, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        self.finals = _Finals(codec)
        task = asyncio.create_task(self.finals.consume(consumer))

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        cleanup.push_async_callback(stop)

    async def measure(self) -> SagaRun:
        """Start everything, measure, stop everything and clean up."""
        started = time.monotonic()
        logging.getLogger("aiokafka").setLevel(logging.WARNING)  # its consumer's chatter
        try:
            async with contextlib.AsyncExitStack() as cleanup:
                self.broker = await self._start_broker()
                await self._start_registry()
                target = await self._own_directus(cleanup)
                self.directus_pid = listener_pid(int(target.url.rsplit(":", 1)[1].split("/")[0]))
                http = await cleanup.enter_async_context(aiohttp.ClientSession())
                self.admin = await DirectusClient.login(
                    http, target.url, target.admin_email, target.admin_password
                )
                users = await self.admin.request(
                    "GET", "/users",
                    params={"filter": json.dumps({"email": {"_eq": SAGA_EMAIL}}), "fields": "id"},
                )  # fmt: skip
                if not users:
                    raise StackError(f"Directus at {target.url} has no saga user {SAGA_EMAIL}")
                self.saga_user = str(users[0]["id"])
                say(
                    f"starting {self.worker_count} worker(s) and waiting until they follow Directus"
                )
                await self._start_workers(target)
                self._gql = await cleanup.enter_async_context(
                    aiohttp.ClientSession(
                        headers=self.headers,
                        connector=aiohttp.TCPConnector(limit=0),
                        timeout=aiohttp.ClientTimeout(total=30),
                    )
                )
                customers, products, prices = await self._make_data(self.admin)
                say(f"made {len(customers)} customers and {len(products)} products; waiting "
                    "for the catalog")  # fmt: skip
                await self._wait_catalog(customers, products)
                client = CountingDirectus(
                    target.url, DirectusAuth.static(SecretStr(target.saga_token)),
                    timeout_s=self.source.request_timeout_s, retry=RetryPolicy(0.1, 1.0),
                    max_attempts=1, session=http,
                )  # fmt: skip
                self.direct = DirectSagas(client, self.tenant, prices)
                say(f"warm-up: {self.warmup} orders through each path")
                await self._warm_up(make_orders(self.warmup, self.lines, customers, products, -1))
                await self._follow_finals(cleanup)
                setup_s = time.monotonic() - started
                phases = []
                for r in range(1, self.rounds + 1):
                    orders = make_orders(self.sagas, self.lines, customers, products, self.seed + r)
                    paths = (CEILING, SAGAS) if r % 2 else (SAGAS, CEILING)
                    for path in paths:
                        say(f"round {r} of {self.rounds}: {path}, {self.sagas} orders")
                        measure = self._ceiling_pass if path == CEILING else self._sagas_pass
                        phases.append(await measure(orders, r))
                return SagaRun(
                    self.sagas, self.concurrency, self.lines, self.worker_count,
                    self.product_count, phases, self.warmup, setup_s,
                )  # fmt: skip
        finally:
            for proc in reversed(self.procs):
                await proc.stop()
            shutil.rmtree(self.root, ignore_errors=True)


def _drop_database(server: str, name: str) -> None:
    conn = psycopg2.connect(server, connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        conn.close()


# -- the report ------------------------------------------------------------------------------

CPU_ORDER = ("client", "workers", "Directus", "Postgres", "broker", "other")


def _per_saga(phase: Phase) -> str:
    """CPU ms per order by process group, and the machine's busy share."""
    n = max(phase.finished, 1)
    parts = [
        f"{name} {phase.cpu_s[name] * 1000 / n:.1f}" for name in CPU_ORDER if name in phase.cpu_s
    ]
    busy = phase.cpu_s["machine"] / phase.cpu_s["wall"] / (os.cpu_count() or 1)
    return f"CPU ms per order: {', '.join(parts)}; machine {busy:.0%} busy"


def _others(phase: Phase, top: int = 4) -> str:
    """The other processes that used most CPU in the phase (% of a core), and what
    processes gone by the phase's end used."""
    wall = phase.cpu_s.get("wall") or 1.0
    named = [f"{name} {secs / wall:.0%}" for name, secs in phase.other_cpu_s[:top]]
    gone = phase.cpu_s.get("other", 0.0) - sum(secs for _, secs in phase.other_cpu_s)
    if gone / wall >= 0.01:
        named.append(f"processes that exited meanwhile {gone / wall:.0%}")
    return ", ".join(named)


def _parts(phase: Phase) -> str:
    """Where the orders' time went: the mean of each part."""
    out = []
    last = (BETWEEN, SEEN)
    order = [p for p in phase.parts_ms if p not in last] + [p for p in last if p in phase.parts_ms]
    for part in order:
        values = phase.parts_ms[part]
        text = f"{part} {statistics.fmean(values):.0f}"
        if part == BETWEEN and phase.transitions_ms:
            per = len(phase.transitions_ms) / len(values)
            text += f" ({per:.0f} x {statistics.fmean(phase.transitions_ms):.0f})"
        out.append(text)
    return ", ".join(out)


def _requests(phase: Phase) -> str:
    n = max(phase.orders, 1)
    each = ", ".join(f"{what} {count / n:.2g}" for what, count in sorted(phase.requests.items()))
    return f"{phase.requests.total() / n:.3g} ({each})"


def _writes(phase: Phase) -> str:
    n = max(phase.orders, 1)
    return ", ".join(f"{what} {count / n:g}" for what, count in sorted(phase.writes.items()))


def _line(phase: Phase) -> str:
    what = "sagas  " if phase.path == SAGAS else "ceiling"
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(phase.outcomes.items())) or "none"
    client = phase.cpu_s.get("client", 0.0) / phase.seconds if phase.seconds else 0.0
    return (
        f"round {phase.round} {what}: {phase.per_s:6.1f} sagas/s, p50 {phase.p50_ms:6.0f} ms, "
        f"p99 {phase.p99_ms:6.0f} ms, {phase.finished}/{phase.orders} in {phase.seconds:.1f} s "
        f"({outcomes}; errors {phase.errors}); load client CPU {client:.0%} of a core"
    )


def _pooled(path: str, phases: list[Phase], rounds: int) -> str:
    """One path over all rounds: its orders per second of measuring, percentiles of all."""
    pooled = LoadResult(
        sum(p.seconds for p in phases), [ms for p in phases for ms in p.latencies_ms]
    )
    return (
        f"{path:<7} over {rounds} rounds: {pooled.per_s:6.1f} sagas/s, p50 "
        f"{pooled.p50_ms:6.0f} ms, p99 {pooled.p99_ms:6.0f} ms of {pooled.requests} orders"
    )


def ratios(phases: Sequence[Phase]) -> list[float]:
    """Per round: sagas/s over the ceiling's sagas/s."""
    out = []
    for r in sorted({p.round for p in phases}):
        rates = {p.path: p.per_s for p in phases if p.round == r}
        if rates.get(CEILING) and SAGAS in rates:
            out.append(rates[SAGAS] / rates[CEILING])
    return out


def report(run: SagaRun) -> list[str]:
    """The report's lines: each phase with its CPU and writes, then the ratio."""
    lines = []
    for phase in run.phases:
        lines.append(_line(phase))
        if phase.statuses:
            read = ", ".join(f"{k} {v}" for k, v in sorted(phase.statuses.items()))
            lines.append(f"        statuses read back through GraphQL saga(id): {read}")
        lines.append(f"        {_per_saga(phase)}")
        if phase.other_cpu_s:
            lines.append(f"        other processes (share of a core): {_others(phase)}")
        lines.append(f"        Directus writes per order: {_writes(phase) or 'none'}")
        if phase.requests:
            lines.append(f"        Directus requests per order: {_requests(phase)}")
        if phase.parts_ms:
            lines.append(f"        time per order (mean ms): {_parts(phase)}")
        if phase.first_error:
            lines.append(f"        first error: {phase.first_error}")
    rounds = sorted({p.round for p in run.phases})
    if len(rounds) > 1:
        for path in (SAGAS, CEILING):
            lines.append(_pooled(path, [p for p in run.phases if p.path == path], len(rounds)))
    found = ratios(run.phases)
    if found:
        mean = sum(found) / len(found)
        spread = f" (range {min(found):.2f} to {max(found):.2f})" if len(found) > 1 else ""
        met = "met" if mean >= TARGET else "NOT met"
        lines.append(
            f"sagas / ceiling: {mean:.2f}{spread} over {len(found)} round(s) — "
            f"target ≥ {TARGET}: {met}"
        )
    by_path: dict[str, set[str]] = {}
    for phase in run.phases:
        by_path.setdefault(phase.path, set()).add(_writes(phase))
    if len(by_path) == 2 and by_path[SAGAS] != by_path[CEILING]:
        lines.append("WARNING: the two paths made different Directus writes per order")
    return lines


def failed(run: SagaRun) -> bool:
    """Whether any order failed, or any saga ended otherwise than COMPLETED."""
    return any(
        p.errors
        or p.finished != p.orders
        or set(p.outcomes) - {"COMPLETED"}
        or set(p.statuses) - {"COMPLETED"}
        for p in run.phases
    )


def run_saga(
    settings: DevSettings,
    *,
    sagas: int,
    concurrency: int,
    lines: int,
    workers: int,
    products: int,
    rounds: int,
) -> int:
    """``mesh bench saga``: print the figures; return the exit code (1 on any error)."""
    print(
        f"saga: {sagas} place-order sagas of {lines} line(s) (products drawn from {products}, "
        f"1 to {MAX_UNITS} units), {concurrency} in flight, {workers} worker(s), {rounds} "
        f"round(s) against the ceiling: the same orders' Directus requests sent directly "
        "(the saga's own steps without the engine). The load client runs in this process, "
        "on the same cores as the workers, Directus and Postgres.",
        flush=True,
    )
    bench = SagaBench(
        settings, sagas=sagas, concurrency=concurrency, lines=lines, workers=workers,
        products=products, rounds=rounds,
    )  # fmt: skip
    run = asyncio.run(bench.measure())
    print(f"set-up (services, data, warm-up of {run.warmup} orders per path): {run.setup_s:.0f} s")
    print("\n".join(report(run)))
    return 1 if failed(run) else 0
