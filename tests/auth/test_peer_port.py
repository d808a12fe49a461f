"""Peer endpoints on their own port (``MESH_PEER_PORT_OFFSET``): two real workers read
across each other through it, the public port does not serve them, the peer port serves
nothing else, and ``mesh relations check`` finds its way there."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from mesh.auth.peer import PeerSigner
from mesh.domain import DomainConfig
from mesh.sources.events import Op
from tests.support.auth import FLEET_SECRET, bearer, worker_env
from tests.support.fleet import Fleet, at_version, customer, entity, eventually, invoice, open_fleet
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker

OFFSET = 1
ENV = {"MESH_PEER_PORT_OFFSET": str(OFFSET)}
QUERY = '{ customer(id: "%d") { name invoices { number } } }'


@pytest_asyncio.fixture(scope="module")
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    root = tmp_path_factory.mktemp("peer-port")
    async with open_fleet(sample_domain, root, "peer-port", 4, ["pp-a", "pp-b"], ENV) as fleet:
        for c in range(1, 9):  # customers on both workers, each with an invoice
            await fleet.send("customer", c, c, customer(f"C{c}"), Op.CREATE)
            await fleet.send("invoice", 100 + c, 100 + c, invoice(f"I{c}", c), Op.CREATE)
        for c in range(1, 9):
            await eventually(fleet.workers[0], entity("invoice", 100 + c), at_version(100 + c))
        yield fleet


async def _status(url: str, method: str = "GET", **kw: object) -> int:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kw) as resp:  # type: ignore[arg-type]
        return resp.status


async def _graphql(worker: MeshWorker, query: str) -> object:
    async with (
        aiohttp.ClientSession(headers=bearer()) as http,
        http.post(f"{worker.base}/graphql", json={"query": query}) as resp,
    ):
        return await resp.json()


async def test_reads_across_workers_go_through_the_peer_port(fleet: Fleet) -> None:
    a = fleet.workers[0]
    answered_by = set()
    for c in range(1, 9):
        expected = {"data": {"customer": {"name": f"C{c}", "invoices": [{"number": f"I{c}"}]}}}
        query = QUERY % c

        async def answers(query: str = query, expected: object = expected) -> bool:
            return await _graphql(a, query) == expected

        await wait_until(answers, timeout=30, what=f"{query} answering {expected}")
        answered_by.add((await a.get(entity("customer", c))).worker)
    assert answered_by == {"pp-a", "pp-b"}  # some keys lived on the other worker


async def test_each_port_serves_only_its_own(fleet: Fleet) -> None:
    a = fleet.workers[0]
    peer = f"http://127.0.0.1:{a.port + OFFSET}"
    path, body = "/api/v1/internal/entities", b'{"tenant": "default", "keys": []}'

    def signed() -> dict[str, str]:
        headers = PeerSigner(FLEET_SECRET.encode()).headers("POST", path, body)
        return {**headers, "Content-Type": "application/json"}

    assert await _status(a.base + path, "POST", headers=signed(), data=body) == 404
    assert await _status(peer + path, "POST", headers=signed(), data=body) == 200
    assert await _status(peer + path, "POST", data=body) == 403  # unsigned, right port
    assert await _status(peer + entity("customer", 1), headers=bearer()) == 404
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert await _status(peer + probe) == 200
        assert await _status(a.base + probe) == 200


async def test_the_relations_check_reaches_the_peer_port(fleet: Fleet) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh", "relations", "check", "--url", fleet.workers[1].base,
        "--settle", "1",
        env={**os.environ, **worker_env(), **ENV},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, out.decode()
    assert "no differences" in out.decode()
