"""Fixtures for the tests against a real Directus 10.10.0.

One Directus serves the whole session: installed from npm into the cache directory (first
run only), bootstrapped once on a fresh, uniquely named database of the session's Postgres,
started on a free port, seeded once. Databases made here are dropped at the end.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
import pytest_asyncio
from psycopg2 import sql

from mesh.dev.directus import (
    DirectusService,
    DirectusSettings,
    SeedResult,
    ensure_installed,
    generate_service_token,
    seed_directus,
)
from mesh.dev.process import free_port
from mesh.domain import DomainConfig, load_domain

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "dictamesh-test-admin"

TIMINGS: dict[str, float] = {}
"""Seconds per step, printed in the terminal summary (the numbers DESIGN.md quotes)."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "directus: needs the real Directus")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        steps = ", ".join(f"{name} {secs:.1f} s" for name, secs in TIMINGS.items())
        terminalreporter.write_line(f"Directus timings: {steps}")


def cache_dir() -> Path:
    """Where Directus is installed: the dev stack's cache, shared with `make dev`."""
    return Path(os.environ.get("MESH_CACHE_DIR", Path.home() / ".cache" / "dictamesh"))


@dataclass
class DirectusHandle:
    """The session's Directus and how to reach it."""

    service: DirectusService
    database_url: str
    service_token: str
    seed: SeedResult | None = field(default=None)

    @property
    def url(self) -> str:
        return self.service.url


@pytest.fixture(scope="session")
def make_database(postgres_url: str) -> Iterator[Callable[[], str]]:
    """A factory of fresh, uniquely named databases; all are dropped at session end."""
    made: list[str] = []

    def connect() -> psycopg2.extensions.connection:
        conn = psycopg2.connect(postgres_url)
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
        return conn

    def make() -> str:
        name = f"dictamesh_test_directus_{uuid.uuid4().hex[:10]}"
        conn = connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        made.append(name)
        return urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))

    yield make
    conn = connect()
    try:
        with conn.cursor() as cur:
            for name in made:
                # FORCE: a Directus killed mid-test may still hold connections.
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
    finally:
        conn.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def directus_install() -> Path:
    """The Directus install directory (npm install on the first run only, ~3 min)."""
    started = time.monotonic()
    install_dir = await ensure_installed(cache_dir(), progress=print)
    TIMINGS["ensure installed"] = time.monotonic() - started
    return install_dir


@pytest.fixture(scope="session")
def sample_domain() -> DomainConfig:
    """The domain config shipped with the project."""
    return load_domain(PROJECT_ROOT / "config" / "domain.yaml")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def directus(
    directus_install: Path,
    make_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[DirectusHandle]:
    """A bootstrapped, running Directus on a fresh database (not yet seeded)."""
    database_url = make_database()
    service = DirectusService(
        DirectusSettings(
            install_dir=directus_install,
            database_url=database_url,
            state_dir=tmp_path_factory.mktemp("directus-state"),
            admin_email=ADMIN_EMAIL,
            admin_password=ADMIN_PASSWORD,
            port=free_port(),
        )
    )
    started = time.monotonic()
    await service.bootstrap()
    TIMINGS["bootstrap (fresh db)"] = time.monotonic() - started
    started = time.monotonic()
    try:
        await service.start()
        TIMINGS["start"] = time.monotonic() - started
        yield DirectusHandle(service, database_url, service_token=generate_service_token())
    finally:
        await service.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def seeded(directus: DirectusHandle, sample_domain: DomainConfig) -> DirectusHandle:
    """The session's Directus after one seed run with the sample domain."""
    if directus.seed is None:
        started = time.monotonic()
        directus.seed = await seed_directus(
            directus.url,
            ADMIN_EMAIL,
            ADMIN_PASSWORD,
            sample_domain,
            service_token=directus.service_token,
        )
        TIMINGS["seed"] = time.monotonic() - started
    return directus
