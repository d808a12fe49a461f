"""Random Directus edits end to end: the catalog tables, REST and the Postgres mirror equal
Directus' own state afterwards.

A seeded random sequence of a few hundred changes is made through Directus' REST API as its
admin: customers, products, invoices and invoice items created, updated and deleted;
invoices re-pointed to another customer, items to another invoice or product (one by one
and several in one request); parents deleted while children still point at them (the
schema's foreign keys say ``ON DELETE SET NULL``). Then, polling until a deadline, every
entity the sequence made is compared with what Directus returns for it:

1. ``GET /api/v1/entities/{type}/{id}``: a live item has every field of the domain config
   equal to Directus' value, a deleted one answers ``deleted: true``; both at the version of
   the item's last activity row, or of a later delete of an entity it pointed at (the
   database cleared the reference then, and the adapter reads the item again for it). The
   API answers from the RocksDB tables of the worker owning the key, so this checks the
   tables too.
2. ``GET /api/v1/entities/{type}/{id}/relations``: ``customer.invoices`` and
   ``invoice.items`` list exactly the live children whose field holds that parent in
   Directus, and forward relations name the parent Directus names.
3. The Postgres mirror: one row per entity in the table of its type, with the same typed
   columns, ``data`` and version, or a row marked deleted.

Nothing is mocked. Directus is the session's seeded one, shared with other modules: only
rows made here are changed, and they are deleted again at the end so that the seed's counts
hold. Two ``python -m mesh worker`` processes (app id ``catalog-directus-sequence``, 4
partitions per topic, so requests are routed between them) capture the changes and run the
mirror. The entity topics' names are fixed by the domain config, so the fleet gets a broker
of its own: events another module publishes to them must not fold into these entities.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
import pytest_asyncio

from mesh.domain import DomainConfig
from tests.catalog.directus_sequence_support import (
    ENTITY_TYPES,
    Api,
    Edits,
    mirror_differences,
    read_truth,
    rest_differences,
)
from tests.fixtures.directus import ADMIN_EMAIL, ADMIN_PASSWORD, DirectusHandle
from tests.support.directus_admin import DirectusAdmin
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker, start_following_fleet

pytestmark = pytest.mark.directus

APP_ID = "catalog-directus-sequence"
PARTITIONS = 4
SEED = 20261102
OPERATIONS = 500
CONVERGE_TIMEOUT = 45.0
"""Seconds the fleet may take to reflect the last change (normally a few)."""
SHOWN = 20
"""Differences listed per sink in a failure message."""


# -- the fleet ---------------------------------------------------------------------------------


@dataclass
class Fleet:
    """The module's workers, an admin session on Directus and the mirror's database."""

    domain: DomainConfig
    admin: DirectusAdmin
    workers: list[MeshWorker]
    mirror_dsn: str
    api: Api
    sequences: list[Edits] = field(default_factory=list)
    """Sequences run on Directus (their rows are deleted when the module ends)."""

    def edits(self, seed: int) -> Edits:
        edits = Edits(self.admin, self.domain, random.Random(seed))
        self.sequences.append(edits)
        return edits

    async def remove_leftovers(self) -> None:
        for edits in self.sequences:
            await edits.remove_leftovers()

    def errors(self) -> list[str]:
        """The ERROR lines the workers logged."""
        return [f"{w.name}: {line}" for w in self.workers for line in w.errors()]


@pytest_asyncio.fixture(scope="module")
async def fleet(
    seeded: DirectusHandle,
    sample_domain: DomainConfig,
    registry_url: str,
    make_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Fleet]:
    """Two workers following the session's Directus (the snapshot done), with the mirror
    writing to a fresh database."""
    root = tmp_path_factory.mktemp("directus-sequence")
    async with contextlib.AsyncExitStack() as cleanup:
        http = await cleanup.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        )
        collections = [sample_domain.entities[t].collection for t in ENTITY_TYPES]
        admin = await DirectusAdmin.login(
            http, seeded.url, ADMIN_EMAIL, ADMIN_PASSWORD, collections
        )
        mirror_dsn = make_database()
        workers = await start_following_fleet(
            cleanup, app_id=APP_ID, root=root, names=("sequence-a", "sequence-b"),
            directus=seeded, registry_url=registry_url, partitions=PARTITIONS,
            env={"MESH_DATABASE_URL": mirror_dsn},
        )  # fmt: skip
        fleet = Fleet(sample_domain, admin, workers, mirror_dsn, Api(http, workers))
        cleanup.push_async_callback(fleet.remove_leftovers)
        yield fleet


# -- the test ----------------------------------------------------------------------------------


async def test_random_directus_edits_end_equal_in_tables_rest_and_postgres(fleet: Fleet) -> None:
    domain, admin = fleet.domain, fleet.admin
    start = await admin.head()
    edits = fleet.edits(SEED)
    began = time.monotonic()
    await edits.run(OPERATIONS)
    took = time.monotonic() - began
    # The seed must keep producing the cases this test is about.
    for case in (
        "update customer",
        "update product",
        "update invoice",
        "re-point invoice",
        "re-point invoice_item",
        "re-point items in one request",
        "delete customer with children",
        "delete product with children",
        "delete invoice with children",
        "last change: delete customer with children",
        "last change: delete invoice with children",
        "last change: delete product with children",
        "delete invoice_item",
        "delete items in one request",
    ):
        assert edits.done[case] > 0, f"the sequence made no {case!r}: {dict(edits.done)}"
    truth = await read_truth(admin, domain, edits, start)

    differences: dict[str, list[str]] = {}

    async def equal() -> bool:
        differences["REST"] = await rest_differences(fleet.api, domain, truth)
        differences["Postgres"] = await mirror_differences(fleet.mirror_dsn, domain, truth)
        return not any(differences.values())

    def report() -> str:
        made = sum(len(ids) for ids in edits.made.values())
        lines = [
            f"after {sum(edits.done.values())} changes in {took:.0f} s making {made} entities "
            f"({dict(edits.done)}), REST and Postgres differ from Directus:"
        ]
        for where, wrong in differences.items():
            lines.append(f"{where}: {len(wrong)} differences")
            lines += [f"  {line}" for line in wrong[:SHOWN]]
        lines.append("worker errors:")
        lines += [f"  {line}" for line in fleet.errors()[:10]] or ["  (none)"]
        return "\n".join(lines)

    await wait_until(equal, timeout=CONVERGE_TIMEOUT, what=report, interval=0.5)
    # Keys lived on both workers: the comparison went through the routing, not around it.
    assert set(fleet.api.readers) == {w.name for w in fleet.workers}, fleet.api.readers
