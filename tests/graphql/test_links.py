"""The WebSocket link between workers (:mod:`mesh.catalog.links`) against a real worker:
only the fleet may open one, it answers reads as ``POST /api/v1/internal/entities`` does,
refuses bad messages with an error naming the message, and a worker with links open
still stops promptly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from mesh.auth.peer import PeerSigner
from mesh.catalog.links import LINK_PATH
from mesh.domain import DomainConfig
from mesh.sources.events import Op
from tests.support.auth import FLEET_SECRET, TENANT, bearer
from tests.support.fleet import Fleet, at_version, customer, entity, eventually, open_fleet

CUSTOMER = {"kind": "entity", "name": "customer", "id": "1"}
INVOICES = {"kind": "relation", "name": "customer.invoices", "id": "1"}


@pytest_asyncio.fixture(scope="module")
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    root: Path = tmp_path_factory.mktemp("links")
    async with open_fleet(sample_domain, root, "links", 2, ["link-solo"]) as opened:
        await opened.send("customer", 1, 1, customer("Ada"), Op.CREATE)
        await eventually(opened.workers[0], entity("customer", 1), at_version(1))
        yield opened


def _signed() -> dict[str, str]:
    return PeerSigner(FLEET_SECRET.encode()).headers("GET", LINK_PATH, b"")


async def test_only_the_fleet_opens_a_link(fleet: Fleet) -> None:
    url = fleet.workers[0].base + LINK_PATH
    async with aiohttp.ClientSession() as http:
        for headers in ({}, bearer()):  # nobody, and a user however entitled
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with http.ws_connect(url, headers=headers):
                    pass
            assert refused.value.status in (401, 403), refused.value


async def test_a_link_answers_reads_and_names_bad_messages(fleet: Fleet) -> None:
    worker = fleet.workers[0]
    url = worker.base + LINK_PATH
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=_signed()) as ws:
        await ws.send_bytes(orjson.dumps({"id": 7, "tenant": TENANT, "keys": [CUSTOMER, INVOICES]}))
        answer = orjson.loads((await ws.receive()).data)
        over_http = await worker.get(entity("customer", 1))
        assert answer["id"] == 7
        [record, members] = answer["results"]
        assert record["value"]["state"]["name"] == over_http.body["data"]["name"] == "Ada"
        assert members == {"value": []}

        await ws.send_bytes(orjson.dumps({"id": 8, "tenant": "nobody", "keys": [CUSTOMER]}))
        refused = orjson.loads((await ws.receive()).data)
        assert refused["id"] == 8
        assert "tenant" in refused["error"]

        await ws.send_bytes(b"not json")
        assert orjson.loads((await ws.receive()).data) == {
            "id": None, "error": "the body is not JSON"
        }  # fmt: skip

        # Still open and answering after the refusals.
        await ws.send_bytes(orjson.dumps({"id": 9, "tenant": TENANT, "keys": [CUSTOMER]}))
        assert orjson.loads((await ws.receive()).data)["id"] == 9

        # A worker stopping closes its links rather than wait for them.
        started = time.monotonic()
        await worker.stop()
        assert time.monotonic() - started < 20
        closing = await ws.receive()
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_graphql_reads_other_workers_on_links_and_survives_one_dying(
    sample_domain: DomainConfig, tmp_path: Path
) -> None:
    names = ["link-a", "link-b"]
    env = {"MESH_PEER_TIMEOUT_S": "3"}
    async with open_fleet(sample_domain, tmp_path, "links-two", 4, names, env) as two:
        a, b = two.workers
        for cid in range(1, 9):
            await two.send("customer", cid, 1, customer(f"C{cid}"), Op.CREATE)
        for cid in range(1, 9):
            await eventually(a, entity("customer", cid), at_version(1))
        query = "{ " + " ".join(f'c{c}: customer(id: "{c}") {{ name }}' for c in range(1, 9)) + " }"
        headers = {**bearer(), "Cache-Control": "no-cache", "X-Mesh-Debug": "batches"}
        async with aiohttp.ClientSession(headers=headers) as http:

            async def ask() -> dict[str, Any]:
                async with http.post(f"{a.base}/graphql", json={"query": query}) as resp:
                    assert resp.status == 200
                    answer: dict[str, Any] = await resp.json()
                    return answer

            answer = await ask()
            assert answer["data"] == {f"c{c}": {"name": f"C{c}"} for c in range(1, 9)}
            remote = [x for x in answer["extensions"]["batches"] if x["kind"] == "remote"]
            assert remote, "every customer is worker A's: nothing crossed"
            assert {x["via"] for x in remote} == {"link"}

            await b.kill()  # its end of the link goes with it
            started = time.monotonic()
            answer = await ask()
            # Answered, not hung: B's keys fail as unavailable (or, rebalanced already,
            # are read from A), never anything else.
            assert time.monotonic() - started < 10
            for error in answer.get("errors", []):
                assert error["extensions"]["code"] == "UNAVAILABLE", error
