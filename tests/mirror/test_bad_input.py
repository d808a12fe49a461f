"""Bad input never stops the mirror: undecodable records and rows Postgres refuses go to the
dead-letter topic with headers saying where they came from, and the events after them are
mirrored."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiokafka import ConsumerRecord
from prometheus_client import CollectorRegistry

from mesh.codec import pack, unpack
from tests.mirror.events import event
from tests.mirror.support import Scenario, catch_up, domain_data


def _headers(record: ConsumerRecord) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


async def test_undecodable_records_become_dead_letters(scenario: Scenario) -> None:
    domain = scenario.domain
    await scenario.create_topics()
    topic = domain.topic("customer")
    good = event(domain, "customer", 1, 1)
    valid = scenario.codecs["customer"].dumps(good)
    _, body = unpack(valid)
    key = scenario.key("customer", 1)
    bad = [
        (topic, key, valid[:5] + b"\xff\xfe garbage"),  # corrupt body
        (topic, key, pack(2_000_000_000, bytes(body))),  # schema id no registry knows
        (topic, key, b"plain text, not Avro"),  # no wire-format header
        (topic, key, None),  # a Kafka tombstone
        (topic, scenario.key("customer", 99), valid),  # keyed by another entity's URN
    ]
    landed = await scenario.send_raw(bad)
    later = [event(domain, "customer", i, 10 + i) for i in range(2, 6)]
    await scenario.produce([good, *later])

    registry = CollectorRegistry()
    mirror = scenario.mirror(metrics=registry)
    await mirror.start()
    try:
        await catch_up(mirror)
    finally:
        await mirror.stop()

    assert sorted(scenario.rows("customer")) == [1, 2, 3, 4, 5]
    letters = await scenario.dead_letters(len(bad))
    assert len(letters) == len(bad)
    by_offset = {
        (int(_headers(r)["dictamesh.partition"]), int(_headers(r)["dictamesh.offset"])): r
        for r in letters
    }
    classes = []
    for (_, k, value), meta in zip(bad, landed, strict=True):
        letter = by_offset[(meta.partition, meta.offset)]
        headers = _headers(letter)
        assert headers["dictamesh.stage"] == "mirror-decode"
        assert headers["dictamesh.topic"] == topic
        assert headers["dictamesh.error.message"]
        assert (letter.key, letter.value) == (k, value)
        classes.append(headers["dictamesh.error.class"])
    assert classes == [
        "CodecError",
        "UnknownSchemaError",
        "CodecError",
        "CodecError",
        "MirrorRowError",
    ]
    assert registry.get_sample_value("dictamesh_mirror_errors_total", {"kind": "decode"}) == 5


async def test_rows_postgres_refuses_become_dead_letters_and_the_rest_is_written(
    scenario: Scenario, caplog: pytest.LogCaptureFixture
) -> None:
    await scenario.create_topics()
    await scenario.produce([event(scenario.domain, "product", 1, 1)])
    mirror = scenario.mirror()
    await mirror.start()
    try:
        await catch_up(mirror)
    finally:
        await mirror.stop()

    # The config widens stock to long; the mirror leaves the integer column as it is (and
    # says so), so a value beyond 32 bits is refused by Postgres.
    data = domain_data()
    data["entities"]["product"]["fields"]["stock"]["type"] = "long"
    wider = scenario.domain_with(data)
    events = [
        event(wider, "product", 2, 2),
        event(wider, "product", 3, 3, stock=2**40),  # integer out of range
        event(wider, "product", 4, 4, name="NUL \x00 inside"),  # text cannot hold NUL
        event(wider, "product", 5, 5),
    ]
    landed = await scenario.produce(events, codecs=scenario.codecs_for(wider))
    registry = CollectorRegistry()
    mirror = scenario.mirror(wider, metrics=registry)
    with caplog.at_level(logging.WARNING, logger="mesh.mirror"):
        await mirror.start()
        try:
            await catch_up(mirror)
        finally:
            await mirror.stop()
    assert "mirror column product.stock is integer but the domain config says bigint" in caplog.text

    assert sorted(scenario.rows("product")) == [1, 2, 5]
    letters = await scenario.dead_letters(2)
    got = {
        (int(_headers(r)["dictamesh.offset"]), int(_headers(r)["dictamesh.partition"])): _headers(r)
        for r in letters
    }
    for meta, error_class in [(landed[1], "NumericValueOutOfRange"), (landed[2], "ValueError")]:
        headers = got[(meta.offset, meta.partition)]
        assert headers["dictamesh.stage"] == "mirror-write"
        assert headers["dictamesh.error.class"] == error_class
    assert registry.get_sample_value("dictamesh_mirror_errors_total", {"kind": "write"}) == 2
    assert registry.get_sample_value("dictamesh_mirror_rows_total", {"entity_type": "product"}) == 2


async def test_an_event_of_another_or_an_undeclared_tenant_is_dead_lettered(
    scenario: Scenario,
) -> None:
    """A record keyed as one tenant's entity writes no row of another; nor does an event of
    a tenant the config does not declare, or one whose ``after`` is another entity's."""
    domain = scenario.domain
    default, beta = domain.tenants
    await scenario.create_topics()
    topic = domain.topic("customer")
    codec = scenario.codecs["customer"]
    bad = [
        # beta's customer 1 by its key, default's by its payload
        (topic, scenario.key("customer", 1, beta), codec.dumps(event(domain, "customer", 1, 1))),
        (
            topic,
            domain.urn("gamma", "customer", "2").encode(),
            codec.dumps(event(domain, "customer", 2, 2, tenant="gamma")),
        ),
        (
            topic,
            scenario.key("customer", 3),
            codec.dumps(event(domain, "customer", 3, 3, id=4)),  # after of customer 4
        ),
    ]
    landed = await scenario.send_raw(bad)
    await scenario.produce([event(domain, "customer", 5, 5, tenant=beta)])
    mirror = scenario.mirror()
    await mirror.start()
    try:
        await catch_up(mirror)
    finally:
        await mirror.stop()

    assert list(scenario.rows("customer", by_tenant=True)) == [(beta, 5)]
    letters = await scenario.dead_letters(len(bad))
    by_offset = {
        (int(_headers(r)["dictamesh.partition"]), int(_headers(r)["dictamesh.offset"])): r
        for r in letters
    }
    messages = []
    for meta in landed:
        headers = _headers(by_offset[(meta.partition, meta.offset)])
        assert headers["dictamesh.stage"] == "mirror-decode"
        assert headers["dictamesh.error.class"] == "MirrorRowError"
        messages.append(headers["dictamesh.error.message"])
    assert messages[0] == (
        f"event keyed 'urn:dictamesh:{beta}:customer:1' (tenant '{beta}') carries a payload "
        f"of tenant '{default}'; the key must be its URN urn:dictamesh:{default}:customer:1: "
        "a record may not write another tenant's row"
    )
    assert messages[1].startswith(
        "event for customer '2' is of tenant 'gamma', which the domain config does not declare"
    )
    assert messages[2] == (
        "event for customer '3' carries the 'after' record of id 4; entity_id and the "
        "record's key must agree"
    )


async def test_with_topic_per_tenant_an_event_on_another_tenants_topic_is_dead_lettered(
    broker: str, registry_url: str, mirror_database: str, tmp_path: Path
) -> None:
    """Each tenant's topics can be fenced by the broker's ACLs: a record on beta's topic
    writes no row of default's, however it is keyed."""
    data = domain_data()
    data["topic_per_tenant"] = True
    scenario = Scenario(broker, registry_url, mirror_database, tmp_path, data)
    domain = scenario.domain
    default, beta = domain.tenants
    await scenario.create_topics()
    intruder = event(domain, "customer", 1, 1)  # default's, keyed as default's
    landed = await scenario.send_raw(
        [
            (
                domain.topic("customer", beta),
                scenario.key("customer", 1),
                scenario.codecs["customer"].dumps(intruder),
            )
        ]
    )
    await scenario.produce(
        [event(domain, "customer", 2, 2), event(domain, "customer", 2, 3, tenant=beta)]
    )
    mirror = scenario.mirror()
    await mirror.start()
    try:
        await catch_up(mirror)
    finally:
        await mirror.stop()

    assert sorted(scenario.rows("customer", by_tenant=True)) == [(beta, 2), (default, 2)]
    [letter] = await scenario.dead_letters(1)
    headers = _headers(letter)
    assert int(headers["dictamesh.offset"]) == landed[0].offset
    assert headers["dictamesh.error.class"] == "MirrorRowError"
    assert headers["dictamesh.error.message"] == (
        f"event of tenant '{default}' on topic {domain.topic('customer', beta)}; with "
        f"topic_per_tenant its events belong on {domain.topic('customer', default)}"
    )
