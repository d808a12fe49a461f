"""A worker SIGKILLed at a saga's transition boundaries (and inside its Directus effects)
leaves every saga to end ``COMPLETED`` or ``COMPENSATED`` once it is back, with Directus
holding exactly the effects of the completed ones: stock counted (in == out), one invoice,
one item per line, one reservation per line, no orphan rows.

One worker owns everything here (the saga and the products), so each crash point is hit
on the first order placed after the worker restarts with ``MESH_SAGA_CRASH_AT`` set; the
crash hook kills it once (its marker file), and the restarted worker resumes the saga.
``make test`` runs a few points; ``MESH_SAGA_CRASH_MATRIX=all`` (the soak's ``sagas``
scenario) runs every one.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from mesh.domain import DomainConfig
from tests.fixtures.directus import DirectusHandle
from tests.sagas.support import (
    finished,
    in_catalog,
    new_customer,
    new_product,
    place,
    rows_of,
    start_shop,
    stock_of,
)
from tests.support.directus_admin import DirectusAdmin
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker

pytestmark = pytest.mark.directus

FORWARD = [
    "STARTED",
    "STEP_STARTED:check_order",
    "STEP_SUCCEEDED:check_order",
    "STEP_STARTED:reserve_stock",
    "reserve:row_created",
    "held:stock_written",
    "STEP_SUCCEEDED:reserve_stock",
    "STEP_STARTED:create_invoice",
    "STEP_SUCCEEDED:create_invoice",
    "STEP_STARTED:issue_invoice",
    "STEP_SUCCEEDED:issue_invoice",
    "COMPLETED",
]
"""Every boundary of a completed order (and the points inside a reservation)."""
BACKWARD = [
    "STEP_FAILED:reserve_stock",
    "COMPENSATING",
    "release:row_marked",
    "released:stock_written",
    "STEP_COMPENSATED:reserve_stock",
    "COMPENSATED",
]
"""Every boundary of an order refused for stock (line 1 reserved, line 2 short)."""

QUICK = ["STARTED", "reserve:row_created", "STEP_STARTED:create_invoice", "released:stock_written"]
ALL = os.environ.get("MESH_SAGA_CRASH_MATRIX") == "all"
POINTS = (FORWARD + BACKWARD) if ALL else QUICK


@dataclass
class Crashing:
    worker: MeshWorker
    admin: DirectusAdmin
    markers: Path


@pytest_asyncio.fixture(scope="module")
async def crashing(
    seeded: DirectusHandle,
    sample_domain: DomainConfig,
    registry_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Crashing]:
    root = tmp_path_factory.mktemp("saga-crashes")
    async with contextlib.AsyncExitStack() as cleanup:
        admin, [worker] = await start_shop(
            cleanup, seeded, sample_domain, registry_url,
            app_id=f"saga-crash-{uuid.uuid4().hex[:6]}", root=root, names=("sc-a",),
            partitions=2, env={"MESH_SAGA_DEADLINE_S": "120"},
        )  # fmt: skip
        yield Crashing(worker, admin, root / "markers")


async def _restart(worker: MeshWorker, env: dict[str, str]) -> None:
    if worker.running:
        await worker.stop()
    for name in ("MESH_SAGA_CRASH_AT", "MESH_SAGA_CRASH_MARKER"):
        worker.env.pop(name, None)
    worker.env.update(env)
    await worker.start()
    await worker.wait_ready()


@pytest.mark.parametrize("point", POINTS)
async def test_a_worker_killed_mid_saga_leaves_exactly_the_completed_effects(
    crashing: Crashing, point: str
) -> None:
    admin, worker = crashing.admin, crashing.worker
    crashing.markers.mkdir(exist_ok=True)
    marker = crashing.markers / f"{point.replace(':', '_')}-{time.time_ns()}"
    refused = point in BACKWARD
    customer = await new_customer(admin)
    a, b = await new_product(admin, 7, "3.00"), await new_product(admin, 1 if refused else 4)
    if not worker.running:
        await _restart(worker, {})
    await in_catalog(worker, "customer", customer)
    await in_catalog(worker, "product", a.id)
    await in_catalog(worker, "product", b.id)
    await _restart(worker, {"MESH_SAGA_CRASH_AT": point, "MESH_SAGA_CRASH_MARKER": str(marker)})

    key = uuid.uuid4().hex
    lines: list[tuple[int | str, int]] = [(a.id, 3), (b.id, 2)]
    with contextlib.suppress(aiohttp.ClientError, AssertionError, TimeoutError):
        await place(worker, customer, lines, key)  # the worker may die answering it
    await wait_until(
        lambda: _dead(worker), timeout=60, what=f"the crash hook to kill the worker at {point}"
    )
    assert marker.exists()
    await worker.start()  # the marker is there: it does not crash again
    await worker.wait_ready()
    # The client retries with the same key: the same saga, whatever it had reached.
    answer = await place(worker, customer, lines, key)
    assert "errors" not in answer, answer
    saga = await finished([worker], answer["data"]["placeOrder"]["id"])

    reservations = await rows_of(admin, "reservations", {"saga": {"_eq": saga["id"]}})
    invoices = await rows_of(admin, "invoices", {"saga_key": {"_eq": saga["id"]}})
    if refused:
        assert saga["status"] == "COMPENSATED", (saga["error"], saga["history"])
        assert (await stock_of(admin, a.id), await stock_of(admin, b.id)) == (7, 1)
        assert [(r["product"], r["status"]) for r in reservations] == [(a.id, "released")]
        assert all(i["status"] == "cancelled" for i in invoices)
        return
    assert saga["status"] == "COMPLETED", (saga["error"], saga["history"])
    assert (await stock_of(admin, a.id), await stock_of(admin, b.id)) == (4, 2)  # once each
    assert sorted((r["product"], r["quantity"], r["status"]) for r in reservations) == [
        (a.id, 3, "held"),
        (b.id, 2, "held"),
    ]
    [invoice] = invoices
    assert invoice["status"] == "issued"
    items = await rows_of(admin, "invoice_items", {"invoice": {"_eq": invoice["id"]}})
    assert sorted((i["product"], i["quantity"]) for i in items) == [(a.id, 3), (b.id, 2)]
    orphans = await rows_of(admin, "invoice_items", {"saga_key": {"_starts_with": saga["id"]}})
    assert len(orphans) == 2


async def _dead(worker: MeshWorker) -> bool:
    return not worker.running
