"""``mesh relations check``: finds every wrong relation member on a real fleet, repairs what
the version guard allows, and reports no change in flight as a difference.

Two workers, 4 partitions. Wrong index entries are made the way a lost or stray relation
change would leave them: relation changes published straight to the relations topic.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mesh.catalog.ingest import relations_topic_name
from mesh.domain import DomainConfig
from mesh.sources.events import Op
from tests.support.auth import worker_env
from tests.support.fleet import Fleet, customer, dead_letters_of, entity, invoice, open_fleet
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker

APP_ID = "catalog-relations-check"
PARTITIONS = 4
CUSTOMERS, INVOICES = 6, 12
HUGE = 10**9
"""A version newer than any record: an index entry the version guard will not overwrite."""


@pytest_asyncio.fixture(scope="module")
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    root = tmp_path_factory.mktemp("relations-check")
    async with open_fleet(sample_domain, root, APP_ID, PARTITIONS, ["check-a", "check-b"]) as fleet:
        position = 0
        for c in range(1, CUSTOMERS + 1):
            position += 1
            await fleet.send("customer", c, position, customer(f"C{c}"), Op.CREATE)
        for i in range(1, INVOICES + 1):
            position += 1
            await fleet.send("invoice", i, position, invoice(f"I{i}", i % CUSTOMERS + 1), Op.CREATE)
        await wait_until(
            lambda: members_are(fleet.workers[0], 2, {"1", "7"}),
            timeout=30,
            what="the seeded invoices in the relation indexes",
        )
        yield fleet


async def members(worker: MeshWorker, customer_id: int) -> set[str] | None:
    """The invoices a customer lists (``None`` while it is not in the catalog yet)."""
    answer = await worker.get(entity("customer", customer_id) + "/relations")
    if answer.status != 200:
        return None
    return {m["id"] for m in answer.body["reverse"]["invoices"]["members"]}


async def members_are(worker: MeshWorker, customer_id: int, expected: set[str]) -> bool:
    return await members(worker, customer_id) == expected


async def check(worker: MeshWorker, *flags: str) -> tuple[int, str]:
    """Run ``mesh relations check`` as an operator would; its exit status and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh", "relations", "check", "--url", worker.base,
        "--settle", "1", "--wait", "30", *flags,
        env={**os.environ, **worker_env()}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def publish_op(fleet: Fleet, customer_id: int, **op: object) -> None:
    """A relation change for a customer's ``invoices``, straight onto the relations topic."""
    urn = fleet.domain.urn("default", "customer", str(customer_id))
    body = {"relation": "customer.invoices", **op}
    await fleet.send_raw(relations_topic_name(APP_ID), urn.encode(), json.dumps(body).encode())


async def test_a_consistent_fleet_has_no_differences(fleet: Fleet) -> None:
    status, out = await check(fleet.workers[0])
    assert status == 0, out
    assert "no differences" in out
    assert "on 2 workers (check-a, check-b)" in out
    assert f"against {INVOICES} child records" in out


async def test_differences_are_reported_then_repaired_within_the_version_guard(
    fleet: Fleet,
) -> None:
    a, b = fleet.workers
    invoice_5 = (await a.get(entity("invoice", 5))).body  # points at customer 6
    version_5 = invoice_5["version"]
    assert invoice_5["data"]["customer"] == 6
    await publish_op(fleet, 1, member="5", version=1, present=True)  # stray: 5 is not 1's
    await publish_op(fleet, 6, member="5", version=version_5, present=False, repair=True)
    await publish_op(fleet, 3, member="999", version=7, present=True)  # no such invoice
    await publish_op(fleet, 4, member="6", version=HUGE, present=True)  # newer than 6's record
    await wait_until(
        lambda: members_are(b, 4, {"3", "6", "9"}), timeout=30, what="the stray changes applied"
    )

    status, out = await check(b)
    assert status == 1, out
    assert "4 differences" in out
    for line in (
        f"customer:1 lists 5, which points at urn:dictamesh:default:customer:6 "
        f"(record v{version_5}, entry v1 present)",
        f"customer:6 does not list 5, which points at it (record v{version_5}, "
        f"entry v{version_5} removed)",
        "customer:3 lists 999, which points at nothing (no record, entry v7 present)",
        "customer:4 lists 6",
    ):
        assert line in out, out
    assert "run again with --repair" in out
    assert await members(a, 1) == {"5", "6", "12"}  # a plain check changes nothing

    status, out = await check(a, "--repair")
    assert status == 1, out  # the one entry newer than its record stays, and says why
    assert "not repaired, the index entry is newer than the record" in out
    assert "customer:4 lists 6" in out
    assert await members(a, 1) == {"6", "12"}
    assert await members(b, 6) == {"5", "11"}
    assert await members(a, 3) == {"2", "8"}

    status, out = await check(a)
    assert status == 1, out
    assert "1 difference " in out
    assert "customer:4 lists 6" in out


async def test_only_differences_both_scans_agree_on_are_reported(fleet: Fleet) -> None:
    # On a live fleet a difference may be a change in flight. Here one lasts until the first
    # scan has seen it and is then put right, and another appears only before the second.
    a, b = fleet.workers
    assert (await a.get(entity("invoice", 8))).body["data"]["customer"] == 3
    assert (await a.get(entity("invoice", 9))).body["data"]["customer"] == 4
    await publish_op(fleet, 2, member="8", version=2, present=True)
    await wait_until(
        lambda: members_are(a, 2, {"1", "7", "8"}), timeout=30, what="the stray change applied"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh", "relations", "check", "--url", b.base, "--settle", "5",
        env={**os.environ, **worker_env()}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    while "in the first scan" not in (line := (await proc.stdout.readline()).decode()):
        assert line, "".join(lines)
        lines.append(line)
    await fleet.send("invoice", 8, 10**6, invoice("I8", 2))  # now 8 is customer 2's
    await publish_op(fleet, 5, member="9", version=2, present=True)  # 9 is customer 4's

    async def both_applied() -> bool:
        return await members_are(a, 5, {"4", "9", "10"}) and await members_are(a, 3, {"2"})

    await wait_until(both_applied, timeout=4, what="both within the settle")
    rest, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    out = "".join(lines) + line + rest.decode()
    assert "customer:2 lists 8" not in out, out  # put right before the second scan
    assert "customer:5 lists 9" not in out, out  # not there in the first scan

    status, out = await check(a)
    assert status == 1, out
    assert "customer:5 lists 9, which points at urn:dictamesh:default:customer:4" in out


async def test_a_malformed_relation_change_is_a_dead_letter_and_the_partition_flows(
    fleet: Fleet,
) -> None:
    a, _ = fleet.workers
    await fleet.send("customer", 50, 5000, customer("C50"), Op.CREATE)
    await fleet.send("customer", 51, 5001, customer("C51"), Op.CREATE)
    await fleet.send("invoice", 61, 5002, invoice("I61", 51), Op.CREATE)
    await wait_until(lambda: members_are(a, 51, {"61"}), timeout=30, what="invoice 61 indexed")
    topic, key = (
        relations_topic_name(APP_ID),
        fleet.domain.urn("default", "customer", "50").encode(),
    )
    bad = [
        await fleet.send_raw(topic, key, b"not json"),
        await fleet.send_raw(topic, key, b'{"relation": "customer.nothing", "member": "1"}'),
        await fleet.send_raw(topic, key, b'{"relation": "customer.invoices", "member": "1"}'),
    ]
    await publish_op(fleet, 50, member="61", version=1, present=True)  # after them, same partition
    await wait_until(lambda: members_are(a, 50, {"61"}), timeout=30, what="the partition flowing")

    found = await dead_letters_of(fleet, topic, {m.offset for m in bad})
    for sent in bad:
        headers = found[sent.offset]
        assert headers["dictamesh.stage"] == "catalog-relation"
        assert headers["dictamesh.error.class"] == "CodecError"
    assert "must be JSON" in found[bad[0].offset]["dictamesh.error.message"]
    assert "known relation" in found[bad[1].offset]["dictamesh.error.message"]
    assert "needs version, member and present" in found[bad[2].offset]["dictamesh.error.message"]

    # Leave the indexes as the records say.
    await publish_op(fleet, 50, member="61", version=5002, present=False, repair=True)
    await wait_until(lambda: members_are(a, 50, set()), timeout=30, what="the stray entry gone")
