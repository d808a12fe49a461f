"""``mesh deadletters`` against a real broker, registry and Postgres, with the mirror making
the letters: list, show, replay after the cause is fixed, twice, dry, and what it refuses."""

from __future__ import annotations

import json

import psycopg2
from aiokafka import AIOKafkaProducer

from mesh.codec import pack, unpack
from mesh.deadletter import dead_letter_headers
from mesh.errors import CodecError
from tests.deadletters.support import end_offsets, mesh, records
from tests.mirror.events import event
from tests.mirror.support import Scenario, catch_up

LONG_NAME = "A product name longer than the constraint allows"


async def mirror_once(scenario: Scenario) -> None:
    """Run the mirror until it has read everything (its offsets are committed)."""
    mirror = scenario.mirror()
    await mirror.start()
    try:
        await catch_up(mirror)
    finally:
        await mirror.stop()


def execute(dsn: str, statement: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


async def send(
    scenario: Scenario, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> tuple[int, int]:
    producer = AIOKafkaProducer(bootstrap_servers=scenario.broker, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()
    return meta.partition, meta.offset


async def test_a_row_postgres_refused_is_replayed_once_the_cause_is_fixed(
    scenario: Scenario,
) -> None:
    domain = scenario.domain
    await scenario.create_topics()
    topic = domain.topic("product")
    await scenario.produce([event(domain, "product", 1, 1)])
    await mirror_once(scenario)
    # A DBA adds a constraint the source's data does not meet: Postgres refuses the row.
    execute(scenario.dsn, "ALTER TABLE product ADD CONSTRAINT short_name "
            "CHECK (char_length(name) <= 20)")  # fmt: skip
    key = scenario.key("product", 2)
    value = scenario.codecs["product"].dumps(event(domain, "product", 2, 2, name=LONG_NAME))
    own = [("dictamesh.tenant", b"default"), ("x-request", b"abc")]
    partition, offset = await send(scenario, topic, key, value, own)
    await scenario.produce([event(domain, "product", 3, 3)])
    await mirror_once(scenario)
    assert sorted(scenario.rows("product")) == [1, 3]

    listed = await mesh(scenario, "list")
    assert listed.code == 0, listed.err
    [line] = [line for line in listed.out.splitlines() if "CheckViolation" in line]
    letter = line.split()[0]
    assert "mirror-write" in line
    assert f"{topic}[{partition}]@{offset}" in line
    assert listed.out.splitlines()[-1] == "1 dead letter: mirror-write 1"
    document = json.loads((await mesh(scenario, "list", "--json")).out)
    assert document["by_stage"] == {"mirror-write": 1}
    [entry] = document["letters"]
    assert entry["id"] == letter
    assert entry["origin"] == {"topic": topic, "partition": partition, "offset": offset}
    assert entry["error"]["class"] == "CheckViolation"
    assert "short_name" in entry["error"]["message"]

    shown = await mesh(scenario, "show", letter)
    assert shown.code == 0, shown.err
    assert "stage      mirror-write" in shown.out
    assert "  dictamesh.stage: mirror-write" in shown.out
    assert "  x-request: abc" in shown.out
    assert f"key        {key.decode()}" in shown.out
    schema_id, _ = unpack(value)
    assert f"(Avro, schema id {schema_id}, {topic}-value version 1)" in shown.out
    assert f'"name": "{LONG_NAME}"' in shown.out
    assert "replay     resend: written again by the mirror" in shown.out

    before = await end_offsets(scenario.broker, topic)
    dry = await mesh(scenario, "replay", "--dry-run", letter)
    assert dry.code == 0, dry.err
    assert f"would be sent back to {topic}[{partition}]" in dry.out
    assert "dry run, nothing sent: 1 letter: 1 would be sent back" in dry.out
    assert await end_offsets(scenario.broker, topic) == before

    execute(scenario.dsn, "ALTER TABLE product DROP CONSTRAINT short_name")  # the fix
    replayed = await mesh(scenario, "replay", letter)
    assert replayed.code == 0, replayed.err
    assert f"→ sent back to {topic}[{partition}]@{before[partition]}" in replayed.out
    await mirror_once(scenario)
    rows = scenario.rows("product")
    assert sorted(rows) == [1, 2, 3]
    assert rows[2]["name"] == LONG_NAME
    resent = (await records(scenario.broker, topic, partition))[-1]
    assert (resent.key, resent.value) == (key, value)
    assert list(resent.headers) == [
        *own,
        ("dictamesh.replayed-from", f"{scenario.app_id}.dead_letters:{letter}".encode()),
    ]

    # Again: the record goes once more, and the mirror's version guard ignores it.
    again = await mesh(scenario, "replay", letter)
    assert again.code == 0, again.err
    await mirror_once(scenario)
    assert scenario.rows("product") == rows
    after = await mesh(scenario, "list")
    assert after.out.splitlines()[-1] == "1 dead letter: mirror-write 1"


async def test_what_cannot_be_replayed_is_reported_and_a_record_goes_once(
    scenario: Scenario,
) -> None:
    domain = scenario.domain
    await scenario.create_topics()
    topic = domain.topic("customer")
    key = scenario.key("customer", 7)
    _, body = unpack(scenario.codecs["customer"].dumps(event(domain, "customer", 7, 7)))
    unknown = pack(2_000_000_000, bytes(body))  # a schema id our registry does not know
    partition, offset = await send(scenario, topic, key, unknown, [])
    await mirror_once(scenario)  # mirror-decode
    # The catalog refuses the same record, and another one it can never accept; written
    # as the catalog writes them.
    dead = f"{scenario.app_id}.dead_letters"
    origin = {"topic": topic, "partition": partition, "offset": offset}
    decode = CodecError("schema id 2000000000 unknown")
    letter = dead_letter_headers(stage="catalog-decode", error=decode, context=origin)
    await send(scenario, dead, key, unknown, letter)
    wrong = {**origin, "offset": offset + 1}
    letter = dead_letter_headers(stage="catalog-key", error=CodecError("wrong"), context=wrong)
    await send(scenario, dead, b"urn:wrong", unknown, letter)

    listed = await mesh(scenario, "list")
    assert listed.out.splitlines()[-1] == (
        "3 dead letters: catalog-decode 1, catalog-key 1, mirror-decode 1"
    )
    only = await mesh(scenario, "list", "--stage", "catalog-key", "--since", "1h")
    assert only.out.splitlines()[-1] == "1 dead letter: catalog-key 1"
    assert (await mesh(scenario, "list", "--topic", "elsewhere")).out.strip() == "no dead letters"
    limited = await mesh(scenario, "list", "--limit", "1")
    assert limited.out.splitlines()[-1].startswith("3 dead letters (showing 1: --limit)")

    before = await end_offsets(scenario.broker, topic)
    refused = await mesh(scenario, "replay", "--all")
    assert refused.code == 2
    assert "stdin is not a terminal" in refused.err
    assert "pass --yes" in refused.err
    dry = await mesh(scenario, "replay", "--all", "--dry-run")
    assert dry.code == 1, dry.err  # the catalog-key letter would not be replayed
    assert "not replayed: the record itself is wrong" in dry.out
    assert dry.out.count("→ would be sent back") == 1
    assert "same origin as" in dry.out
    assert await end_offsets(scenario.broker, topic) == before

    replayed = await mesh(scenario, "replay", "--all", "--yes")
    assert replayed.code == 1, replayed.err
    assert replayed.out.count("→ sent back to") == 1
    assert "not replayed: 1 (catalog-key 1)" in replayed.out
    after = await end_offsets(scenario.broker, topic)
    assert sum(after.values()) == sum(before.values()) + 1  # the record went once
    # Its cause was not fixed: the mirror dead-letters it again, saying it was a replay.
    await mirror_once(scenario)
    document = json.loads((await mesh(scenario, "list", "--json")).out)
    assert document["by_stage"]["mirror-decode"] == 2
    newest = document["letters"][-1]["id"]
    shown = await mesh(scenario, "show", newest)
    assert f"dictamesh.replayed-from: {dead}:" in shown.out
    assert "not decoded: schema id 2000000000 is not known" in shown.out


async def test_errors_say_what_to_do(scenario: Scenario) -> None:
    await scenario.create_topics()
    missing = await mesh(scenario, "list", env={"MESH_APP_ID": "nobody"})
    assert missing.code == 2
    assert "nobody.dead_letters does not exist" in missing.err
    assert "Traceback" not in missing.err
    no_partition = await mesh(scenario, "show", "9:0")
    assert no_partition.code == 2
    assert "has no partition 9" in no_partition.err
    no_offset = await mesh(scenario, "show", "0:12345")
    assert no_offset.code == 2
    assert "offset 12345 is not in" in no_offset.err
    unreachable = await mesh(scenario, "list", env={"MESH_BROKER_URL": "kafka://127.0.0.1:1"})
    assert unreachable.code == 2
    assert "cannot reach the Kafka brokers at 127.0.0.1:1" in unreachable.err
    assert "Traceback" not in unreachable.err
    usage = await mesh(scenario, "replay", "--all", "--stage", "map")
    assert usage.code == 2
    assert "one of them" in usage.err
