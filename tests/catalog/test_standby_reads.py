"""A worker answers for an owner that stopped answering from its standby replica.

Two workers with a session timeout long enough that a crashed worker keeps its partitions
for a while (as a static member does while its pod restarts): the survivor's replicas are
kept current between rebalances, so once the owner is killed the survivor answers its
keys at once, marked ``X-Mesh-Standby``, with the newest version; when the group finally
moves the partitions, the survivor owns them and answers without the mark.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mesh.domain import DomainConfig
from mesh.sources.events import Op
from tests.support.fleet import Fleet, at_version, customer, entity, eventually, open_fleet
from tests.support.waiting import wait_until
from tests.support.workers import Answer

APP_ID = "standby-reads"
PARTITIONS = 4
SESSION_TIMEOUT_S = 20
CUSTOMERS = range(1, 41)


@pytest_asyncio.fixture(scope="module")
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    root = tmp_path_factory.mktemp(APP_ID)
    env = {"MESH_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S)}
    async with open_fleet(sample_domain, root, APP_ID, PARTITIONS, ["sb-a", "sb-b"], env) as fleet:
        yield fleet


async def _replicas_current(fleet: Fleet) -> bool:
    for worker in fleet.workers:
        metrics = await worker.metrics()
        table = {"table": "entities_customer"}
        if metrics.value("dictamesh_worker_standby_lag_records", **table) != 0:
            return False
        if metrics.value("dictamesh_worker_standby_partitions_unknown", **table) != 0:
            return False
    return True


async def test_the_survivor_answers_a_dead_owner_s_keys_from_its_replica(fleet: Fleet) -> None:
    a, b = fleet.workers
    for n in CUSTOMERS:
        await fleet.send("customer", n, 100 + n, customer(f"S{n}"), Op.CREATE)
    owned_by_b = []
    for n in CUSTOMERS:
        got = await eventually(a, entity("customer", n), at_version(100 + n))
        if got.worker == b.name:
            owned_by_b.append(n)
    assert owned_by_b, "the keys should spread over both workers"
    # Far fewer records than Faust's standby batch (1,000): only the flush timer applies them.
    await wait_until(lambda: _replicas_current(fleet), timeout=30, what="standby replicas current")

    await b.kill()
    for n in owned_by_b:
        got = await a.get(entity("customer", n))
        assert got.status == 200, got.body
        assert got.headers.get("X-Mesh-Standby") == "true"
        assert got.body["version"] == 100 + n
        assert got.body["data"]["name"] == f"S{n}"

    # After the session timeout the group moves b's partitions to a: owned, no mark.
    def owned(answer: Answer) -> bool:
        return answer.status == 200 and "X-Mesh-Standby" not in answer.headers

    # The dev broker takes about half the session timeout more to complete the join.
    takeover = SESSION_TIMEOUT_S * 3
    for n in owned_by_b:
        got = await eventually(a, entity("customer", n), owned, timeout=takeover)
        assert got.body["version"] == 100 + n
