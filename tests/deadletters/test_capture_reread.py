"""Replaying a change-capture letter: the item is read again from Directus.

The stack of ``tests/sources/test_capture.py`` (its own Directus, broker, registry and a
one-worker fleet). A product breaks the event schema (no ``sku``), so capture dead-letters
it; a script then fixes the row in Directus' database directly, which Directus' activity
log never sees, so capture alone would never publish the fix. Replaying the letter has the
worker read the item again and publish it at the letter's position.
"""

from __future__ import annotations

import json
import re

import psycopg2
import pytest

from mesh.deadletter import dead_letter_topic
from mesh.sources.rereads import reread_topic
from tests.deadletters.support import Run, end_offsets, records, run_mesh
from tests.sources.capture_fixtures import KafkaLog
from tests.sources.test_capture import (
    APP_ONE,
    FEED_TIMEOUT,
    OneWorkerFleet,
    Stack,
    _rows_of,
    fleet,
    only,
    stack,
)
from tests.support.fleet import eventually
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.directus]
__all__ = ["fleet", "stack"]  # the fixtures, used here by name


async def mesh(stack: Stack, *args: str) -> Run:
    """``mesh deadletters ARGS`` against the stack's fleet."""
    return await run_mesh({**stack.worker_env, "MESH_APP_ID": APP_ONE}, *args)


def fix_in_the_database(stack: Stack, item: str, sku: str) -> None:
    """Change the row behind Directus' back: no activity is recorded."""
    conn = psycopg2.connect(stack.directus.settings.database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE products SET sku = %s WHERE id = %s", (sku, int(item)))
    finally:
        conn.close()


async def test_a_capture_letter_replayed_reads_the_item_again(
    stack: Stack, fleet: OneWorkerFleet
) -> None:
    await fleet.ensure_following()
    admin, events, worker = stack.admin, stack.events, fleet.worker
    optional = {"schema": {"is_nullable": True}, "meta": {"required": False}}
    await admin.api.request("PATCH", "/fields/products/sku", optional)
    bad_id: str | None = None
    try:
        start = await admin.head()
        bad = await admin.create(
            "products", {"sku": None, "name": "Re-read", "price": "5.00", "stock": 1}
        )
        bad_id = str(bad["id"])
        (create_row,) = await _rows_of(stack, start, "products", bad_id)
        pattern = rf"^{re.escape(dead_letter_topic(APP_ONE))}$"
        async with KafkaLog(stack.bootstrap, pattern) as dlq:
            await dlq.wait_for(
                lambda: any(r.headers.get("dictamesh.item") == bad_id for r in dlq.records),
                timeout=FEED_TIMEOUT,
                what=f"a dead letter for product {bad_id}",
            )
            letter = only([r for r in dlq.records if r.headers.get("dictamesh.item") == bad_id])
        letter_id = f"{letter.partition}:{letter.offset}"

        listed = await mesh(stack, "list", "--stage", "map")
        assert listed.code == 0, listed.err
        [line] = [line for line in listed.out.splitlines() if line.split()[0] == letter_id]
        assert f"directus/products/{bad_id}@{create_row.id}" in line
        assert "SourceDataError" in line

        requests_before = await end_offsets(stack.bootstrap, reread_topic(APP_ONE), 1)
        dry = await mesh(stack, "replay", "--dry-run", letter_id)
        assert dry.code == 0, dry.err
        assert "source directus would read the item again" in dry.out
        assert await end_offsets(stack.bootstrap, reread_topic(APP_ONE), 1) == requests_before

        fix_in_the_database(stack, bad_id, "CAP-REREAD")
        replayed = await mesh(stack, "replay", letter_id)
        assert replayed.code == 0, replayed.err
        assert "re-read requested from source directus" in replayed.out
        await events.wait_for_positions([create_row.id], timeout=FEED_TIMEOUT)
        event = only(events.changes([create_row.id]))
        assert event.op == "UPDATE"
        assert event.after is not None
        assert event.after["sku"] == "CAP-REREAD"
        path = f"/api/v1/entities/product/{bad_id}"
        answer = await eventually(worker, path, lambda a: a.status == 200)
        assert answer.body["version"] == create_row.id
        # Done: the request is deleted (its last record is a tombstone).
        last = (await records(stack.bootstrap, reread_topic(APP_ONE), 0))[-1]
        assert last.key == f"directus/products/{bad_id}".encode()
        assert last.value is None

        # Again: the item is published once more at the same version, which changes nothing.
        again = await mesh(stack, "replay", letter_id)
        assert again.code == 0, again.err
        await events.wait_for(
            lambda: len(events.changes([create_row.id])) == 2,
            timeout=FEED_TIMEOUT,
            what="the second re-read's event",
        )
        first, second = events.changes([create_row.id])
        assert first.payload() == second.payload()
        assert (await worker.get(path)).body == answer.body

        async def tombstoned() -> bool:
            found = await records(stack.bootstrap, reread_topic(APP_ONE), 0)
            return len(found) == 4 and found[-1].value is None

        await wait_until(tombstoned, timeout=FEED_TIMEOUT, what="the second request deleted")
        requests = [json.loads(r.value) for r in await records(
            stack.bootstrap, reread_topic(APP_ONE), 0) if r.value is not None]  # fmt: skip
        assert {r["letter"] for r in requests} == {f"{dead_letter_topic(APP_ONE)}:{letter_id}"}
    finally:
        if bad_id is not None:
            await admin.delete("products", bad_id)
        required = {"schema": {"is_nullable": False}, "meta": {"required": True}}
        await admin.api.request("PATCH", "/fields/products/sku", required)
