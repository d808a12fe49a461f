"""A partition taken over from a dead worker that never committed its offsets loses nothing.

The mechanism behind relation updates lost in a three-worker fleet, made deterministic:
three workers, no child yet (so the relations topic is empty and nobody has committed an
offset on it), then one worker is killed. While it is dead, invoices on a survivor's
partitions are pointed at customers on the dead worker's partitions: their relation
changes wait in relations-topic partitions without any committed offset. After the session
timeout the survivors take those partitions over. Each survivor's consumer fetches those
records while it recovers; when recovery ends, Faust empties the set of active partitions
that a pending fetch was given, the standby partitions' next records wake that fetch, it
returns every buffered record for the now empty set, and Faust drops the ones of paused
partitions. It then rewinds only partitions with a committed offset, so without more
those relation changes are never read. Every customer must list exactly its invoices on
every worker, after the takeover and after the dead worker is back.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mesh.domain import DomainConfig
from mesh.runtime.partitioning import key_partition
from mesh.sources.events import Op
from tests.support.fleet import Fleet, customer, entity, invoice, open_fleet
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker

APP_ID = "catalog-takeover"
PARTITIONS = 6
"""Two per worker: a restarted worker is given partitions again (Faust balances to at most
ceil(partitions / workers) each, which 4 over 3 meets with one worker empty)."""
CUSTOMERS = 24
INVOICES = 40


@pytest_asyncio.fixture
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    root = tmp_path_factory.mktemp("catalog-takeover")
    async with open_fleet(
        sample_domain, root, APP_ID, PARTITIONS, ["take-a", "take-b", "take-c"]
    ) as fleet:
        yield fleet


def partition_of(domain: DomainConfig, entity_type: str, entity_id: int) -> int:
    return key_partition(domain.urn("default", entity_type, str(entity_id)).encode(), PARTITIONS)


async def owners(reader: MeshWorker) -> dict[str, set[int]]:
    """The partitions each worker owns, as the customers' answers name them."""
    found: dict[str, set[int]] = {}
    for c in range(1, CUSTOMERS + 1):
        answer = await reader.get(entity("customer", c))
        assert answer.status == 200, answer
        found.setdefault(str(answer.worker), set()).add(int(answer.headers["X-Mesh-Partition"]))
    return found


async def relation_differences(
    fleet: Fleet, reader: MeshWorker, want: dict[int, set[str]]
) -> list[str]:
    wrong = []
    for c, invoices in sorted(want.items()):
        got = await reader.get(entity("customer", c) + "/relations")
        ids = (
            {m["id"] for m in got.body["reverse"]["invoices"]["members"]}
            if got.status == 200
            else got.body
        )
        if ids != invoices:
            wrong.append(f"customer {c}: want {sorted(invoices)}, got {ids}")
    return wrong


async def test_relation_changes_waiting_for_a_dead_owner_are_applied_by_its_successor(
    fleet: Fleet, sample_domain: DomainConfig
) -> None:
    survivor, victim, other = fleet.workers
    position = 0
    for c in range(1, CUSTOMERS + 1):
        position += 1
        await fleet.send("customer", c, position, customer(f"C{c}"), Op.CREATE)
    await wait_until(
        lambda: _all_seen(fleet, survivor), timeout=30, what="every customer in the catalog"
    )
    owned = await owners(survivor)
    mine, theirs = owned.get(survivor.name, set()), owned.get(victim.name, set())
    assert mine, owned
    assert theirs, owned
    # Invoices the survivor folds, customers the victim owns: relation changes go round the
    # relations topic, to partitions nobody has consumed or committed yet.
    children = [
        i for i in range(1, 10 * INVOICES) if partition_of(sample_domain, "invoice", i) in mine
    ]
    parents = [
        c for c in range(1, CUSTOMERS + 1) if partition_of(sample_domain, "customer", c) in theirs
    ]
    assert children
    assert parents

    assert victim.proc is not None
    await victim.proc.kill()
    want: dict[int, set[str]] = {c: set() for c in range(1, CUSTOMERS + 1)}
    for n, i in enumerate(children[:INVOICES]):
        c = parents[n % len(parents)]
        position += 1
        await fleet.send("invoice", i, position, invoice(f"INV-{i}", c), Op.CREATE)
        want[c].add(str(i))

    wrong: list[str] = []

    async def right(reader: MeshWorker) -> bool:
        try:
            wrong[:] = await relation_differences(fleet, reader, want)
        except (OSError, TimeoutError) as exc:
            wrong[:] = [repr(exc)]
        return not wrong

    for reader in (survivor, other):
        await wait_until(
            functools.partial(right, reader),
            timeout=60,
            what=lambda: f"after the takeover: {wrong[:10]}",
        )
    await victim.start()
    await fleet.wait_stable()
    for reader in fleet.workers:
        await wait_until(
            functools.partial(right, reader),
            timeout=60,
            what=lambda: f"after the restart: {wrong[:10]}",
        )


async def _all_seen(fleet: Fleet, reader: MeshWorker) -> bool:
    for c in range(1, CUSTOMERS + 1):
        if (await reader.get(entity("customer", c))).status != 200:
            return False
    return True
