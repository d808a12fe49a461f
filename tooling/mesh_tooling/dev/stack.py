"""``mesh dev``: the whole local stack in the foreground.

Starts, in order: the Kafka-compatible broker, the schema registry, Postgres (the server
at ``MESH_DATABASE_URL`` or a throwaway cluster), Directus (installed from npm on first
run, bootstrapped and seeded; with ``--tenants 2`` a second one, on its own database, for
the second tenant) and one worker. Prints every URL and credential, then waits.
Ctrl-C (or SIGTERM, or any child dying) stops every child in reverse order.

A source the stack runs gets ``MESH_<SOURCE NAME>_URL`` and ``MESH_<SOURCE NAME>_ENABLED``
in the worker's environment (``directus_beta`` → ``MESH_DIRECTUS_BETA_URL``), which the
sample domain config reads; the first tenant's keeps ``MESH_DIRECTUS_URL``. Its tokens go
in the variables the source names: the adapters' read-only one in ``token_env``
(``MESH_DIRECTUS_TOKEN``), the sagas' in ``write_token_env`` (``MESH_DIRECTUS_WRITE_TOKEN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from mesh.domain import DomainConfig, SourceSpec, load_domain
from mesh.errors import MeshError, StackError
from mesh.logs import console_unless_set
from mesh.schemas import load_event_schemas
from mesh.settings import redact_url
from mesh_tooling.dev.broker import start_broker
from mesh_tooling.dev.directus import (
    DirectusService,
    DirectusSettings,
    SeedResult,
    ensure_installed,
    load_or_create_token,
    seed_directus,
)
from mesh_tooling.dev.issuer import DevIssuer
from mesh_tooling.dev.jwks import JWKS_PATH, serve_jwks
from mesh_tooling.dev.postgres import ensure_database, start_throwaway_postgres
from mesh_tooling.dev.process import ManagedProcess, require_free_port
from mesh_tooling.dev.readiness import wait_until_following
from mesh_tooling.settings import DevSettings

Stoppable = Callable[[], Awaitable[None]]

SEEDS = (2026, 4242)
"""Sample-row seeds of the first and second tenant's Directus: same ids, other values."""


@dataclass(frozen=True)
class TenantDirectus:
    """One tenant's Directus as the stack started it."""

    source: SourceSpec
    url: str
    token: str
    saga_token: str
    seeded: SeedResult


def stack_sources(domain: DomainConfig, tenants: int) -> list[SourceSpec]:
    """The Directus source of each of the first ``tenants`` tenants, in tenant order;
    :class:`StackError` when the config has none for one of them."""
    found = []
    for tenant in domain.tenants[:tenants]:
        source = next(
            (s for s in domain.sources if s.tenant == tenant and s.kind == "directus"), None
        )
        if source is None:
            raise StackError(f"the domain config has no Directus source for tenant {tenant!r}")
        found.append(source)
    if len(found) < tenants:
        raise StackError(f"--tenants {tenants}: the domain config declares only {domain.tenants}")
    return found


def source_env(
    source: SourceSpec, url: str, token: str, saga_token: str, *, first: bool
) -> dict[str, str]:
    """What a worker needs to poll ``source`` at ``url`` and have sagas write to it (see
    the module docstring)."""
    name = "DIRECTUS" if first else source.name.upper().replace("-", "_")
    env = {f"MESH_{name}_URL": url, f"MESH_{name}_ENABLED": "true"}
    if source.token_env:
        env[source.token_env] = token
    if source.write_token_env:
        env[source.write_token_env] = saga_token
    return env


def say(message: str) -> None:
    """One progress line on stdout."""
    print(f"==> {message}", flush=True)


class DevStack:
    """The running stack: what was started, so that all of it can be stopped."""

    def __init__(self, settings: DevSettings) -> None:
        self.settings = settings
        self.logs = settings.state_dir / "logs"
        self.children: list[tuple[str, ManagedProcess]] = []
        self._stops: list[Stoppable] = []
        self.summary: list[tuple[str, str]] = []

    async def _start_directus(
        self,
        domain: DomainConfig,
        source: SourceSpec,
        n: int,
        database_url: str,
        install_dir: Path,
    ) -> TenantDirectus:
        """Bootstrap, start and seed the ``n``-th tenant's Directus on its own database."""
        s = self.settings
        suffix = "" if n == 0 else f"_{source.name}"
        port = s.directus_port if n == 0 else s.directus_beta_port
        directus = DirectusService(
            DirectusSettings(
                install_dir=install_dir,
                database_url=ensure_database(database_url, f"dictamesh_directus{suffix}"),
                state_dir=s.state_dir / f"directus{suffix}",
                admin_email=s.directus_admin_email,
                admin_password=s.directus_admin_password.get_secret_value(),
                host=s.dev_host,
                port=port,
            )
        )
        say(f"bootstrapping Directus 10.10.0 on Postgres for tenant {source.tenant}")
        await directus.bootstrap()
        say(f"starting Directus on {directus.url}")
        self._stops.append(directus.stop)
        await directus.start()
        # The adapters' static token: made once, kept in the state directory.
        token = load_or_create_token(s.state_dir / f"directus{suffix}", name="service-token")
        # The sagas' token: their own role, which writes (the adapters' stays read-only).
        saga_token = load_or_create_token(s.state_dir / f"directus{suffix}", name="saga-token")
        say(f"seeding tenant {source.tenant}'s Directus with the sample domain")
        seeded = await seed_directus(
            directus.url,
            s.directus_admin_email,
            s.directus_admin_password.get_secret_value(),
            domain,
            service_token=token,
            saga_token=saga_token,
            rows=s.seed_rows,
            source=source.name,
            seed=SEEDS[n],
            progress=say,
        )
        return TenantDirectus(source, directus.url, token, saga_token, seeded)

    def _directus_lines(self, instance: TenantDirectus) -> list[tuple[str, str]]:
        s, seeded = self.settings, instance.seeded
        return [
            (f"Directus ({instance.source.tenant})", f"{instance.url}/admin"),
            (
                "  admin login",
                f"{s.directus_admin_email} / {s.directus_admin_password.get_secret_value()}",
            ),
            ("  adapter token", f"{instance.token}  (user {seeded.service_email})"),
            ("  saga token", f"{instance.saga_token}  (user {seeded.saga_email})"),
            ("  sample rows", ", ".join(f"{n} {c}" for c, n in seeded.counts.items())),
        ]

    def _track(self, name: str, proc: ManagedProcess) -> None:
        self.children.append((name, proc))
        self._stops.append(proc.stop)

    def preflight(self, domain: DomainConfig) -> None:
        """Fail before starting anything when a port is taken or the config is broken."""
        s = self.settings
        load_event_schemas(domain, s.schemas_dir)
        ports = [
            ("the Kafka broker", s.broker_port),
            ("the schema registry", s.registry_port),
            ("Directus", s.directus_port),
            *(
                [("the second tenant's Directus", s.directus_beta_port)]
                if s.dev_tenants > 1
                else []
            ),
            ("the worker's web server", s.web_port),
            ("the dev token issuer", s.issuer_port),
        ]
        if s.database_url is None:
            ports.append(("the throwaway Postgres", s.postgres_port))
        for service, port in ports:
            require_free_port(service, s.dev_host, port)

    async def start(self) -> None:
        """Start every service; on failure the caller's :meth:`stop` cleans up."""
        s = self.settings
        host = s.dev_host
        domain = load_domain(s.domain_config)
        self.preflight(domain)
        redis = await self._redis()
        started = time.monotonic()

        say(f"starting the Kafka broker (Tansu, memory storage) on {host}:{s.broker_port}")
        self._track("broker", await start_broker(host, s.broker_port, self.logs))
        broker_url = f"kafka://{host}:{s.broker_port}"

        say(f"starting the schema registry on http://{host}:{s.registry_port}")
        registry_url = await self._start_registry(host, s.registry_port)

        database_url = await self._postgres(host)
        mirror_db = ensure_database(database_url, "dictamesh")
        sources = stack_sources(domain, s.dev_tenants)
        install_dir = await ensure_installed(s.cache_dir, progress=say)
        instances = [
            await self._start_directus(domain, source, n, database_url, install_dir)
            for n, source in enumerate(sources)
        ]

        say(f"starting a worker (web on http://{s.web_host}:{s.web_port})")
        # The broker keeps nothing across restarts, so local tables from an earlier run
        # would hold offsets the new broker never had: start the worker from a clean slate.
        shutil.rmtree(s.state_dir / "workers", ignore_errors=True)
        sources_env: dict[str, str] = {}
        for n, instance in enumerate(instances):
            sources_env.update(
                source_env(
                    instance.source, instance.url, instance.token, instance.saga_token, first=n == 0
                )
            )
        issuer = DevIssuer.in_dir(s.state_dir / "issuer")
        jwks_url = f"http://{host}:{s.issuer_port}{JWKS_PATH}"
        say(f"serving the dev token issuer's keys at {jwks_url}")
        self._stops.append(await serve_jwks(issuer, host, s.issuer_port))
        fleet_secret = load_or_create_token(s.state_dir / "fleet", name="fleet-secret")
        await self._start_worker(
            {
                "MESH_AUTH": "jwt",
                "MESH_AUTH_JWKS_URL": jwks_url,
                "MESH_AUTH_ISSUER": issuer.issuer,
                "MESH_AUTH_AUDIENCE": issuer.audience,
                "MESH_FLEET_SECRET": fleet_secret,
                "MESH_BROKER_URL": broker_url,
                "MESH_SCHEMA_REGISTRY_URL": registry_url,
                "MESH_DATABASE_URL": mirror_db,
                "MESH_STATE_DIR": str(s.state_dir),
                "MESH_WEB_PORT": str(s.web_port),
                "MESH_WEB_HOST": s.web_host,
                # Read by people in .state/logs/worker.log, not by a log collector.
                "MESH_LOG_FORMAT": console_unless_set(s),
                **({"MESH_REDIS_URL": redis} if redis else {}),
                **sources_env,
            }
        )
        waited = await wait_until_following(
            [f"http://{s.web_host}:{s.web_port}"], [src.name for src in sources], say=say
        )
        say(f"the sources follow their change feeds (first snapshot took {waited:.0f} s)")
        self.summary = [
            ("Kafka broker", f"{broker_url}  (bootstrap servers {host}:{s.broker_port})"),
            ("Schema registry", registry_url),
            ("Postgres", f"{redact_url(database_url)}  (mirror database dictamesh)"),
            (
                "Redis",
                redact_url(redis)
                if redis
                else "in-process cache (set MESH_REDIS_URL to use Redis)",
            ),
            *(line for instance in instances for line in self._directus_lines(instance)),
            ("Worker", f"http://{s.web_host}:{s.web_port}/healthz  /readyz  /metrics"),
            ("Token issuer", f"{issuer.issuer}  (keys at {jwks_url})"),
            *(
                (
                    f"  token ({tenant})",
                    issuer.mint(tenant, subject="dev", ttl_s=12 * 3600)
                    + "  (12 h; `mesh token --tenant T` mints more)",
                )
                for tenant in domain.tenants
            ),
            ("Logs", str(self.logs)),
        ]
        say(f"stack ready in {time.monotonic() - started:.0f} s")

    async def _start_registry(self, host: str, port: int) -> str:
        data = self.settings.state_dir / "registry" / "registry.db"
        data.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "mesh", "registry", "--host", host, "--port", str(port)]
        proc = ManagedProcess(
            "schema registry", [*argv, "--data", str(data)], log_path=self.logs / "registry.log"
        )
        await proc.start()
        self._track("schema registry", proc)
        url = f"http://{host}:{port}"
        await proc.wait_ready(lambda: _http_ok(f"{url}/subjects"), timeout=30)
        return url

    async def _postgres(self, host: str) -> str:
        s = self.settings
        if s.database_url is not None:
            url = s.database_url.get_secret_value()
            say(f"using Postgres at {redact_url(url)} (MESH_DATABASE_URL)")
            return url
        say(f"starting a throwaway Postgres on {host}:{s.postgres_port} ({s.state_dir}/postgres)")
        proc = await start_throwaway_postgres(host, s.postgres_port, s.state_dir)
        self._track("postgres", proc)
        return f"postgresql://postgres@{host}:{s.postgres_port}/postgres"

    async def _redis(self) -> str | None:
        if self.settings.redis_url is None:
            return None
        url = self.settings.redis_url.get_secret_value()
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        client = aioredis.from_url(url, socket_connect_timeout=3)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            raise StackError(
                f"Redis at MESH_REDIS_URL does not answer ({exc}); start it or unset the variable"
            ) from None
        finally:
            await client.aclose()
        say("using Redis at MESH_REDIS_URL")
        return url

    async def _start_worker(self, env: dict[str, str]) -> None:
        s = self.settings
        proc = ManagedProcess(
            "worker",
            [sys.executable, "-m", "mesh", "worker"],
            log_path=self.logs / "worker.log",
            env=env,
            stop_signal=signal.SIGTERM,
        )
        await proc.start()
        self._track("worker", proc)
        await proc.wait_ready(
            lambda: _http_ok(f"http://{s.web_host}:{s.web_port}/readyz"), timeout=120
        )

    def print_summary(self) -> None:
        """Every URL and credential the stack made."""
        width = max(len(name) for name, _ in self.summary)
        print("\nDictaMesh dev stack is up:", flush=True)
        for name, value in self.summary:
            print(f"  {name:<{width}}  {value}")
        print("\nPress Ctrl-C to stop everything.\n", flush=True)

    async def wait_for_exit(self) -> ManagedProcess:
        """Return the first child that exits on its own."""
        waits = {asyncio.create_task(proc.wait()): proc for _, proc in self.children}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return waits[done.pop()]

    async def stop(self) -> None:
        """Stop everything started so far, newest first."""
        while self._stops:
            stop = self._stops.pop()
            with contextlib.suppress(Exception):
                await stop()


async def _http_ok(url: str) -> bool:
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as resp:
        return resp.status == 200


async def _run(settings: DevSettings) -> int:
    stack = DevStack(settings)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    startup = asyncio.create_task(stack.start())
    interrupted = asyncio.create_task(stopping.wait())
    code = 0
    try:
        await asyncio.wait({startup, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        if not startup.done():
            say("interrupted during start-up")
            startup.cancel()
            with contextlib.suppress(asyncio.CancelledError, MeshError):
                await startup
            return 130
        startup.result()  # raises the start-up error, if any
        stack.print_summary()
        died = asyncio.create_task(stack.wait_for_exit())
        await asyncio.wait({died, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        if died.done():
            proc = died.result()
            print(
                f"mesh: error: {proc.name} exited unexpectedly (code {proc.returncode}); "
                f"last lines of {proc.log_path}:\n{proc.log_tail()}",
                file=sys.stderr,
            )
            code = 1
        else:
            died.cancel()
    finally:
        interrupted.cancel()
        say("stopping the stack")
        await stack.stop()
        say("stopped")
    return code


def run_dev_stack(settings: DevSettings) -> int:
    """Run the stack until Ctrl-C; return the process exit code."""
    return asyncio.run(_run(settings))
