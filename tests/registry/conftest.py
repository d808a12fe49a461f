"""Fixtures: a real registry server on a free 127.0.0.1 port with a tmp_path database.

The server runs its own event loop in a background thread, so both kinds of client work
against it unchanged: the synchronous ones (confluent-kafka, requests) from the test's
thread, and async ones from the test's event loop, without the two loops blocking each other.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from mesh_tooling.registry import create_registry_app


class RegistryServer:
    """The registry app served from a background thread; restartable on the same port."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._ready.clear()
        self._failure = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("registry did not start within 10 s")
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        if self._thread is None or self._loop is None or self._stop is None:
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "registry thread did not stop"
        self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()

    async def _serve(self) -> None:
        runner = web.AppRunner(create_registry_app(self.db_path))
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", self.port)
            await site.start()
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            await runner.cleanup()
            return
        self.port = runner.addresses[0][1]
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()


class Api:
    """Plain HTTP calls against the registry, paths relative to its root."""

    def __init__(self, server: RegistryServer) -> None:
        self.server = server
        self.session = requests.Session()

    def __call__(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: str | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        return self.session.request(
            method, self.server.url + path, json=json, data=data, headers=headers, timeout=10
        )

    def register(self, subject: str, schema: Any, **extra: Any) -> requests.Response:
        """POST a schema (a dict or list is sent as its JSON text) to the subject."""
        text = schema if isinstance(schema, str) else json.dumps(schema)
        return self("POST", f"/subjects/{subject}/versions", json={"schema": text, **extra})

    def close(self) -> None:
        self.session.close()


def db_counts(db_path: Path) -> dict[str, int]:
    """Rows per table, read straight from the database file (WAL lets us read alongside)."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        return {
            table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("schemas", "subject_versions", "config")
        }


def record(name: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An Avro record schema."""
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def fld(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    """An Avro record field."""
    return {"name": name, "type": type_, **extra}


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "registry.db")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(registry: RegistryServer) -> Iterator[Api]:
    client = Api(registry)
    yield client
    client.close()
