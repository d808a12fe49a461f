"""Scaling out a fresh stack, then losing a worker: reverse relations stay right everywhere.

The scenario a new user meets (issue: lost relation updates in a three-worker fleet): a
fresh stack with one worker following Directus, as ``mesh dev`` starts it (8 partitions,
the default timeouts, Redis and the Postgres mirror on); two more workers started with
empty state directories; 10 customers and 15 invoices created through Directus' REST API;
then 150 random edits one after another (40% rename a customer, 40% re-point an invoice,
20% create a customer) while ``worker-1`` is killed with SIGKILL after edit 40 and started
again, with the same state directory, after edit 100. Afterwards, for every customer made,
``customer.invoices`` must equal Directus' ``filter[customer][_eq]`` answer on all three
workers: in GraphQL (cached and ``no-cache``) and in REST; and ``mesh relations check``
finds no difference between the relation indexes and the entity records of the fleet.

Every run starts from a fresh broker, fresh worker state and a fresh app id: the race
showed on the first scale-out of a stack. ``make test`` runs it once; ``make soak`` 20
times, each in its own pytest process (so with a fresh Directus too), with the random
edits seeded by ``MESH_SOAK_SEED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable

import aiohttp
import pytest

from tests.catalog.scale_out_support import (
    Operations,
    dump_topics,
    relation_differences,
    start_scale_out_fleet,
)
from tests.fixtures.directus import ADMIN_EMAIL, ADMIN_PASSWORD, DirectusHandle
from tests.support.auth import worker_env
from tests.support.directus_admin import DirectusAdmin
from tests.support.waiting import wait_until

pytestmark = pytest.mark.directus

OPERATIONS = 150
KILL_AFTER, RESTART_AFTER = 40, 100
CONVERGE_TIMEOUT = 90.0
"""Seconds after the last edit within which every answer must equal Directus (a restarted
worker recovers and rejoins within about two rebalance timeouts)."""


async def test_relations_are_right_on_every_worker_after_one_of_three_is_killed(
    seeded: DirectusHandle,
    registry_url: str,
    redis_url: str,
    make_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    rng = random.Random(int(os.environ.get("MESH_SOAK_SEED", "20261203")))
    root = tmp_path_factory.mktemp("scale-out")
    async with contextlib.AsyncExitStack() as cleanup:
        http = await cleanup.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        )
        admin = await DirectusAdmin.login(
            http, seeded.url, ADMIN_EMAIL, ADMIN_PASSWORD, ["customers", "invoices"]
        )
        fleet = await start_scale_out_fleet(
            cleanup,
            root=root,
            env={
                "MESH_SCHEMA_REGISTRY_URL": registry_url,
                "MESH_DIRECTUS_URL": seeded.url,
                "MESH_DIRECTUS_TOKEN": seeded.service_token,
                "MESH_REDIS_URL": redis_url,
                "MESH_DATABASE_URL": make_database(),
            },
        )
        await fleet.scale_out(["worker-1", "worker-2"])

        ops = Operations(admin, rng)
        cleanup.push_async_callback(ops.remove)
        for _ in range(10):
            await ops.create_customer()
        for _ in range(15):
            await ops.create_invoice()
        victim = fleet.worker("worker-1")
        for n in range(1, OPERATIONS + 1):
            await ops.random_operation()
            if n == KILL_AFTER:
                await victim.kill()
            if n == RESTART_AFTER:
                await victim.start()
        last_edit = time.monotonic()

        wrong: list[str] = []

        async def right_everywhere() -> bool:
            wrong[:] = await relation_differences(http, admin, fleet.workers, ops.customers)
            return not wrong

        def report() -> str:
            lines = [
                f"{len(wrong)} wrong answers {time.monotonic() - last_edit:.0f} s after the "
                f"last of {sum(ops.done.values())} edits ({ops.done}):",
                *wrong[:30],
                "worker errors:",
                *(fleet.errors()[:10] or ["(none)"]),
            ]
            return "\n".join(lines)

        try:
            await wait_until(right_everywhere, timeout=CONVERGE_TIMEOUT, what=report, interval=1.0)
        except AssertionError:
            dump = await dump_topics(fleet.bootstrap, registry_url, root / "topics.jsonl")
            print(f"worker logs in {root / 'logs'}, every record of the broker in {dump}")
            raise

        # The operator's check agrees: every index matches the records of the whole fleet.
        check = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mesh", "relations", "check",
            "--url", fleet.worker("worker-0").base, "--settle", "1",
            env={**os.environ, **worker_env()}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(check.communicate(), timeout=180)
        print(out.decode())
        assert check.returncode == 0, out.decode()
        assert "no differences" in out.decode()
        assert "on 3 workers (worker-0, worker-1, worker-2)" in out.decode()
