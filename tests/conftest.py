"""Shared fixtures: real services, started once per test session.

The broker (Tansu) and the schema registry are started on free ports (by
:mod:`tests.support.services`, which tests starting their own use too). Postgres is
the server on 127.0.0.1:5432 when one answers there (CI and dev machines), otherwise a
throwaway cluster. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from mesh_tooling.dev.postgres import can_connect, start_throwaway_postgres
from mesh_tooling.dev.process import ManagedProcess, free_port
from redis.exceptions import RedisError

from tests.support.services import own_broker, start_registry

PROJECT_ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.fixtures.directus"]

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def session_dir() -> Iterator[Path]:
    """A session-wide scratch directory that the 'postgres' user can traverse."""
    with tempfile.TemporaryDirectory(prefix="dictamesh-tests-") as name:
        os.chmod(name, 0o755)
        yield Path(name)


@pytest_asyncio.fixture(scope="session")
async def broker(session_dir: Path) -> AsyncIterator[str]:
    """``host:port`` of a real Kafka-protocol broker (Tansu, memory storage)."""
    async with contextlib.AsyncExitStack() as cleanup:
        yield await own_broker(cleanup, session_dir / "logs")


@pytest_asyncio.fixture(scope="session")
async def registry_url(session_dir: Path) -> AsyncIterator[str]:
    """Base URL of the project's schema registry, run through the ``mesh`` CLI."""
    proc, url = await start_registry(session_dir / "registry.db", session_dir / "logs")
    yield url
    await proc.stop()


async def _redis_answers(url: str) -> bool:
    client = aioredis.from_url(url, socket_connect_timeout=2)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


@pytest_asyncio.fixture(scope="session")
async def redis_url(session_dir: Path) -> AsyncIterator[str]:
    """A Redis URL: the local server when reachable, else a redis-server of our own."""
    if await _redis_answers(LOCAL_REDIS):
        yield LOCAL_REDIS
        return
    binary = shutil.which("redis-server")
    assert binary, "no Redis answers on 127.0.0.1:6379 and redis-server is not installed"
    port = free_port()
    proc = ManagedProcess(
        "redis",
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        log_path=session_dir / "logs" / "redis.log",
    )
    await proc.start()
    url = f"redis://127.0.0.1:{port}/0"
    await proc.wait_ready(lambda: _redis_answers(url), timeout=30)
    yield url
    await proc.stop()


@pytest_asyncio.fixture(scope="session")
async def postgres_url(session_dir: Path) -> AsyncIterator[str]:
    """A Postgres server URL: the local server when reachable, else a throwaway cluster."""
    if can_connect(LOCAL_POSTGRES):
        yield LOCAL_POSTGRES
        return
    port = free_port()
    proc = await start_throwaway_postgres("127.0.0.1", port, session_dir)
    yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    await proc.stop()
