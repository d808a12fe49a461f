"""The services of ``mesh bench saga``: a broker, the schema registry, a Directus of its own
on a fresh database, the workers following it; the run's customers and products once the
catalog holds them; and the processes whose CPU is counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psycopg2
from psycopg2 import sql

from mesh.errors import StackError
from mesh.graphql.sagas import ORDERS_WRITE
from mesh_tooling.bench.ingest import IngestBench
from mesh_tooling.bench.saga.cpu import listener_pid, postgres_backends
from mesh_tooling.bench.saga.model import say
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

STOCK = 1_000_000
"""Each product's stock: no order is ever refused for want of it."""
PER_QUERY = 25
"""Entities asked per catalog check (GraphQL allows 30 aliases in a query)."""
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class DirectusTarget:
    """The bench's Directus, seeded with the sample domain and both service users."""

    url: str
    admin_email: str
    admin_password: str = field(repr=False)
    service_token: str = field(repr=False)
    saga_token: str = field(repr=False)


class SagaFleet(IngestBench):
    """The services, workers and data of one run (started by :meth:`_start`, stopped and
    cleaned up by :meth:`_stop`)."""

    def __init__(
        self, settings: DevSettings, *, workers: int, products: int, customers: int, seed: int
    ) -> None:
        super().__init__(settings, events=0)
        self.dev = settings
        self.worker_count = workers
        self.product_count = products
        self.customer_count = customers
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
        self._gql: aiohttp.ClientSession | None = None
        self._turn = 0

    # -- services --------------------------------------------------------------------------

    async def _start(
        self, cleanup: contextlib.AsyncExitStack
    ) -> tuple[DirectusTarget, aiohttp.ClientSession]:
        """Start the broker, the registry, Directus (and find the sagas' user in it) and the
        workers, and open the GraphQL client; Directus and an HTTP session for it (Directus
        stopped and the session closed by ``cleanup``)."""
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
        say(f"starting {self.worker_count} worker(s) and waiting until they follow Directus")
        await self._start_workers(target)
        self._gql = await cleanup.enter_async_context(
            aiohttp.ClientSession(
                headers=self.headers,
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        )
        return target, http

    async def _stop(self) -> None:
        """Stop every process and remove the scratch directory."""
        for proc in reversed(self.procs):
            await proc.stop()
        shutil.rmtree(self.root, ignore_errors=True)

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

    # -- CPU -------------------------------------------------------------------------------

    def _groups(self) -> dict[str, list[int]]:
        """The processes whose CPU a phase counts, by group."""
        groups = {
            "client": [os.getpid()],
            "workers": [w.pid for w in self.workers if w.pid is not None],
            "Directus": [self.directus_pid] if self.directus_pid else [],
            "broker": [self.broker.pid] if self.broker and self.broker.pid else [],
        }
        if self.database is not None:
            groups["Postgres"] = postgres_backends(self.database)
        return groups


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
