"""Durability, concurrency, storage failures and the serve_registry lifecycle."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import requests
from mesh_tooling.registry import serve_registry

from mesh.errors import PortInUseError, StackError
from tests.registry.conftest import Api, RegistryServer, db_counts, fld, record


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def v(n: int) -> dict[str, object]:
    """Version ``n`` of an evolving schema: n optional fields."""
    return record("Item", fld("id", "long"), *(fld(f"f{i}", "int", default=0) for i in range(n)))


def snapshot(api: Api) -> dict[str, object]:
    """Everything the API shows about the data set used in the restart tests."""
    return {
        "subjects": api("GET", "/subjects?deleted=true").json(),
        "items": [
            api("GET", f"/subjects/items/versions/{n}?deleted=true").json() for n in (1, 2, 3)
        ],
        "items_live": api("GET", "/subjects/items/versions").json(),
        "other": api("GET", "/subjects/other/versions/latest").json(),
        "config": [api("GET", "/config").json(), api("GET", "/config/other").json()],
        "by_id": [api("GET", f"/schemas/ids/{i}").json() for i in (1, 2, 3, 4)],
    }


def fill(api: Api) -> None:
    for n in range(3):
        assert api.register("items", v(n)).status_code == 200
    assert api.register("other", v(0)).json() == {"id": 1}
    assert api.register("other", record("Other", fld("x", "int"))).status_code == 409
    api("PUT", "/config", json={"compatibility": "FULL"})
    api("PUT", "/config/other", json={"compatibility": "NONE"})
    assert api.register("other", record("Other", fld("x", "int"))).json() == {"id": 4}
    assert api("DELETE", "/subjects/items/versions/2").json() == 2


def test_restart_on_the_same_database_keeps_ids_versions_and_config(
    registry: RegistryServer, api: Api
) -> None:
    fill(api)
    before = snapshot(api)
    assert before["items_live"] == [1, 3]
    registry.restart()
    assert snapshot(api) == before
    # the id counter continues where it was
    assert api.register("other", record("Third", fld("y", "int"))).json() == {"id": 5}


def test_registrations_survive_a_killed_process(tmp_path: Path) -> None:
    db_path = tmp_path / "registry.db"
    port = free_port()
    script = (
        "import asyncio, pathlib, sys\n"
        "from mesh_tooling.registry import serve_registry\n"
        "asyncio.run(serve_registry('127.0.0.1', int(sys.argv[1]), pathlib.Path(sys.argv[2])))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(port), str(db_path)])
    url = f"http://127.0.0.1:{port}"
    try:
        with requests.Session() as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    http.get(f"{url}/", timeout=1)
                    break
                except requests.ConnectionError:
                    assert time.monotonic() < deadline, "registry subprocess did not answer"
                    time.sleep(0.05)
            for n in range(3):
                reply = http.post(
                    f"{url}/subjects/items/versions", json={"schema": json.dumps(v(n))}, timeout=5
                )
                assert reply.json() == {"id": n + 1}
    finally:
        proc.kill()  # no clean shutdown: what was acknowledged must already be on disk
        proc.wait(10)

    server = RegistryServer(db_path)
    server.start()
    try:
        api = Api(server)
        assert api("GET", "/subjects/items/versions").json() == [1, 2, 3]
        assert api("GET", "/subjects/items/versions/3").json()["id"] == 3
        assert json.loads(api("GET", "/schemas/ids/2").json()["schema"]) == v(1)
        api.close()
    finally:
        server.stop()


def test_ids_are_never_reused_after_a_hard_delete(api: Api) -> None:
    assert api.register("a", v(0)).json() == {"id": 1}
    assert api.register("a", v(1)).json() == {"id": 2}
    api("DELETE", "/subjects/a")
    api("DELETE", "/subjects/a?permanent=true")
    assert api("GET", "/schemas/ids/2").status_code == 404
    assert api.register("b", v(2)).json() == {"id": 3}
    assert api.register("b", v(1)).json() == {"id": 2}  # the same schema keeps its id


async def test_concurrent_registrations_get_distinct_ids_and_versions(api: Api) -> None:
    api("PUT", "/config/many", json={"compatibility": "NONE"})
    url = api.server.url

    async def post(http: aiohttp.ClientSession, subject: str, schema: object) -> int:
        body = {"schema": json.dumps(schema)}
        async with http.post(f"{url}/subjects/{subject}/versions", json=body) as reply:
            assert reply.status == 200
            schema_id: int = (await reply.json())["id"]
            return schema_id

    async with aiohttp.ClientSession() as http:
        distinct = await asyncio.gather(*(post(http, "many", v(n)) for n in range(30)))
        same = await asyncio.gather(*(post(http, "same", v(100)) for _ in range(10)))
    assert sorted(distinct) == list(range(1, 31))
    assert same == [31] * 10
    assert api("GET", "/subjects/many/versions").json() == list(range(1, 31))
    assert api("GET", "/subjects/same/versions").json() == [1]


def test_a_failing_write_is_rolled_back_and_reported_as_50001(
    registry: RegistryServer, api: Api
) -> None:
    assert api.register("a", v(0)).json() == {"id": 1}
    with sqlite3.connect(registry.db_path) as db:
        db.execute(
            "CREATE TRIGGER fail BEFORE INSERT ON subject_versions"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
    before = db_counts(registry.db_path)
    reply = api.register("a", v(1))
    assert (reply.status_code, reply.json()) == (
        500,
        {"error_code": 50001, "message": "Error in the backend data store: disk on fire"},
    )
    assert db_counts(registry.db_path) == before  # the schemas row inserted first is gone too
    with sqlite3.connect(registry.db_path) as db:
        db.execute("DROP TRIGGER fail")
    assert api.register("a", v(1)).json() == {"id": 2}


def test_a_broken_database_is_reported_as_50001(registry: RegistryServer, api: Api) -> None:
    with sqlite3.connect(registry.db_path) as db:
        db.execute("DROP TABLE config")
    reply = api("GET", "/config")
    assert (reply.status_code, reply.json()) == (
        500,
        {"error_code": 50001, "message": "Error in the backend data store: no such table: config"},
    )


async def test_serve_registry_runs_until_cancelled_then_frees_its_port(tmp_path: Path) -> None:
    port = free_port()
    task = asyncio.create_task(serve_registry("127.0.0.1", port, tmp_path / "data" / "r.db"))
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(f"http://127.0.0.1:{port}/") as reply:
                    assert (reply.status, await reply.json()) == (200, {})
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.02)
        else:
            pytest.fail("serve_registry did not answer")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # fails if the listener were still open
    assert (tmp_path / "data" / "r.db").exists()


async def test_serve_registry_reports_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUseError) as caught:
            await serve_registry("127.0.0.1", port, tmp_path / "r.db")
    assert f"127.0.0.1:{port}" in str(caught.value)


async def test_serve_registry_reports_an_unreadable_database(tmp_path: Path) -> None:
    db_path = tmp_path / "r.db"
    db_path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StackError, match="cannot open its database"):
        await serve_registry("127.0.0.1", free_port(), db_path)
