"""A rolling restart, as a StatefulSet does it: three workers with their own state dirs are
restarted one at a time (taken out of the client's endpoints, SIGTERM, started again with
the same dir, back once ready) while clients read through REST and GraphQL and changes
keep arriving.

A client sends to ready workers only and retries once, after ``Retry-After``, on a 503.
No read may get a wrong answer (a 404 for an entity that exists, an error that is not
"unavailable"), no change may be lost and no entity stale at the end. Keys whose owner is
down are served from standby replicas that are caught up.

The StatefulSet uses static membership, so a restart moves no partition. The dev broker
(Tansu 0.6) keeps a restarted static member's id and generation, but never completes the
SyncGroup of a *follower* that rejoins that way (it waits for a leader sync no one sends),
so a three-worker static restart cannot run here: this one runs with dynamic membership,
where each stop and start rebalances. What static membership does on Tansu is tested on
a single worker below; the reads still unavailable after one retry are reported.

With a rebalance at every stop and start, this test found faust 0.15.3's recovery crashing
a worker (a standby partition assigned mid-recovery, sought at offset ``None``): guarded
in :mod:`mesh.runtime.recovery`. ``make soak`` runs it ten times over.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio

from mesh.domain import DomainConfig
from tests.support.auth import bearer
from tests.support.fleet import Fleet, customer, entity, invoice, open_fleet
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker

APP_ID = "catalog-rolling"
PARTITIONS = 6
CUSTOMERS = 30
INVOICES = 60
NAMES = ["roll-a", "roll-b", "roll-c"]
QUERY = "query One($id: ID!) { customer(id: $id) { id name invoices { id number } } }"


@pytest_asyncio.fixture
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    root = tmp_path_factory.mktemp("catalog-rolling")
    env = {"MESH_PEER_TIMEOUT_S": "3"}
    async with open_fleet(sample_domain, root, APP_ID, PARTITIONS, NAMES, env) as fleet:
        yield fleet


@dataclass
class Client:
    """Reads from the workers the endpoints list, like a Service's clients."""

    ready: set[str]
    """Names of the workers in the endpoints (the test takes one out before stopping it)."""
    workers: dict[str, MeshWorker]
    counts: Counter[str] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)
    """Answers that are not the entity nor a 503: never acceptable."""
    unavailable: list[str] = field(default_factory=list)
    """Reads that were still unavailable after the one retry."""

    async def run(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            customer_id = random.randint(1, CUSTOMERS)
            await self.read(http, n % 2 == 0, customer_id)
            await asyncio.sleep(0.01)

    async def read(self, http: aiohttp.ClientSession, rest: bool, customer_id: int) -> None:
        what = f"{'REST' if rest else 'GraphQL'} customer {customer_id}"
        for attempt in (1, 2):
            worker = self.workers[random.choice(sorted(self.ready))]
            self.counts["requests"] += 1
            try:
                status, retry_after, problem = await self._ask(http, worker, rest, customer_id)
            except aiohttp.ClientError as exc:
                self.wrong.append(f"{what} from {worker.name}: {exc!r}")
                return
            if status == 200 and problem is None:
                self.counts["ok"] += 1
                return
            if status == 503 and attempt == 1:
                self.counts["retries"] += 1
                await asyncio.sleep(float(retry_after or 1))
                continue
            failed = self.unavailable if status == 503 else self.wrong
            failed.append(f"{what} from {worker.name}: {status} {problem}")
            return

    async def _ask(
        self, http: aiohttp.ClientSession, worker: MeshWorker, rest: bool, customer_id: int
    ) -> tuple[int, str | None, str | None]:
        if rest:
            async with http.get(worker.base + entity("customer", customer_id)) as resp:
                if resp.headers.get("X-Mesh-Standby"):
                    self.counts["standby"] += 1
                body = await resp.json()
                problem = None if resp.status == 200 and body.get("id") else f"{body}"
                if problem:  # who read it, and how
                    problem += f" { ({k: v for k, v in resp.headers.items() if 'Mesh' in k}) }"
                return resp.status, resp.headers.get("Retry-After"), problem
        payload = {"query": QUERY, "variables": {"id": str(customer_id)}}
        async with http.post(worker.base + "/graphql", json=payload) as resp:
            body = await resp.json()
            errors = body.get("errors")
            unavailable = [e["extensions"] for e in errors or () if "extensions" in e]
            if (
                errors
                and len(unavailable) == len(errors)
                and all(e.get("code") == "UNAVAILABLE" for e in unavailable)
            ):
                return 503, str(unavailable[0]["retryAfter"]), str(errors)
            found = (body.get("data") or {}).get("customer")
            problem = str(errors) if errors else (None if found else f"body {body}")
            return resp.status, None, problem


async def fresh_everywhere(fleet: Fleet) -> bool:
    """Every worker answers the newest version of every entity produced."""
    for worker in fleet.workers:
        for (entity_type, entity_id), (position, _) in fleet.latest.items():
            answer = await worker.get(entity(entity_type, entity_id))
            if answer.status != 200 or answer.body.get("version") != position:
                return False
    return True


async def test_a_rolling_restart_fails_no_read_and_moves_no_partition(fleet: Fleet) -> None:
    position = itertools.count(1)
    for c in range(1, CUSTOMERS + 1):
        await fleet.send("customer", c, next(position), customer(f"C{c}"))
    for i in range(1, INVOICES + 1):
        await fleet.send("invoice", i, next(position), invoice(f"I{i}", 1 + i % CUSTOMERS))
    await wait_until(lambda: fresh_everywhere(fleet), timeout=60, what="seeded")
    moved_before = [
        await w.metric("dictamesh_worker_partitions_moved_total") for w in fleet.workers
    ]

    workers = {w.name: w for w in fleet.workers}
    client = Client(set(workers), workers)
    stop = asyncio.Event()

    async def keep_changing() -> None:
        while not stop.is_set():
            c = random.randint(1, CUSTOMERS)
            await fleet.send("customer", c, next(position), customer(f"C{c}-{time.time():.3f}"))
            await asyncio.sleep(0.02)

    stops: list[float] = []
    async with aiohttp.ClientSession(
        headers=bearer(), timeout=aiohttp.ClientTimeout(total=10)
    ) as http:
        tasks = [asyncio.create_task(client.run(http, stop)) for _ in range(4)]
        tasks.append(asyncio.create_task(keep_changing()))
        try:
            await asyncio.sleep(2)
            for worker in fleet.workers:
                client.ready.discard(worker.name)  # out of the endpoints (preStop)
                await asyncio.sleep(1)
                started = time.monotonic()
                await worker.stop()
                stops.append(time.monotonic() - started)
                await worker.start()
                await worker.wait_ready(timeout=90)
                client.ready.add(worker.name)
                await asyncio.sleep(2)
        finally:
            stop.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [r for r in results if r is not None] == []
    moved = [await w.metric("dictamesh_worker_partitions_moved_total") for w in fleet.workers]
    print(
        f"rolling restart: {dict(client.counts)}, unavailable after a retry: "
        f"{len(client.unavailable)}, partitions moved per worker: {moved}, "
        f"stops took {[f'{s:.1f}' for s in stops]} s"
    )
    assert client.wrong == [], client.wrong[:10]
    assert client.counts["ok"] > 200
    await wait_until(lambda: fresh_everywhere(fleet), timeout=60, what="no entity stale")
    assert moved_before == [0, 0, 0]
    assert sum(moved) > 0  # dynamic membership: the metric sees every rebalance


async def test_a_static_member_restarts_into_its_own_assignment(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Static membership on the dev broker, with one worker (the leader): its instance id
    reaches the group, and a restart keeps its member id, generation and partitions."""
    root = tmp_path_factory.mktemp("catalog-static")
    env = {"MESH_SESSION_TIMEOUT_S": "20", "MESH_REBALANCE_TIMEOUT_S": "3"}
    async with open_fleet(
        sample_domain, root, "catalog-static", PARTITIONS, ["solo"], env, static_membership=True
    ) as fleet:
        (worker,) = fleet.workers
        before = joined(worker)
        assert before[0].startswith("solo-")  # the instance id names the member
        await worker.stop()
        await worker.start()
        await worker.wait_ready(timeout=90)
        assert joined(worker) == before
        assert await worker.metric("dictamesh_worker_partitions_moved_total") == 0


def joined(worker: MeshWorker) -> tuple[str, int]:
    """The member id and generation of the worker's last group join (from its log)."""
    found = re.findall(r"Joined group '[^']+' \(generation (\d+)\) with member_id (\S+)",
                       worker.log_path.read_text())  # fmt: skip
    assert found, worker.log_tail()
    generation, member = found[-1]
    return member, int(generation)
