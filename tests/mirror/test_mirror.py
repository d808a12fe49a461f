"""The mirror against real Kafka, schema registry and Postgres: rows equal the events, the
version guard, deletes, replays, collapsing and a field added to the config."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry

from mesh.domain import DomainConfig
from tests.mirror.events import event
from tests.mirror.support import Scenario, catch_up, domain_data

META = [
    "urn", "tenant", "source_system", "source_instance", "source_collection", "version",
    "schema_subject", "schema_id", "schema_version", "first_seen", "last_changed", "deleted",
    "event_id", "data",
]  # fmt: skip


def _json(value: Any) -> Any:
    """How a value of ``after`` reads back from the ``data`` jsonb column."""
    if isinstance(value, datetime):  # Postgres drops trailing zeros of the fraction
        text = value.astimezone(UTC).isoformat()
        head, _, zone = text.rpartition("+")
        return (head.rstrip("0").rstrip(".") if "." in head else head) + "+" + zone
    return value


def expected_row(scenario: Scenario, ev: dict[str, Any], first_seen: datetime) -> dict[str, Any]:
    domain = scenario.domain
    codec = scenario.codecs[ev["entity_type"]]
    after = ev["after"]
    return {
        **after,
        "urn": domain.urn("default", ev["entity_type"], ev["entity_id"]),
        "tenant": ev["tenant"],
        "source_system": "directus",
        "source_instance": "directus",
        "source_collection": ev["source"]["collection"],
        "version": ev["source"]["position"],
        "schema_subject": f"{domain.topic(ev['entity_type'])}-value",
        "schema_id": codec.schema_id,
        "schema_version": 1,
        "first_seen": first_seen,
        "last_changed": ev["source"]["timestamp"],
        "deleted": False,
        "event_id": ev["event_id"],
        "data": {k: _json(v) for k, v in after.items()},
    }


async def test_rows_equal_the_events(scenario: Scenario) -> None:
    domain = scenario.domain
    await scenario.create_topics()
    invoice = event(domain, "invoice", 42, 1000, number='INV-42 "quoted" \\ {b,c} ü ✓')
    invoice["after"]["issued_at"] = None
    invoice["after"]["total"] = Decimal("9999999999.99")  # numeric(12,2) at its limit
    products = [event(domain, "product", i, 500 + i) for i in range(1, 40)]
    customer = event(domain, "customer", 7, 10, email=None, name="")
    await scenario.produce([invoice, *products, customer])
    registry = CollectorRegistry()
    mirror = scenario.mirror(metrics=registry)
    await mirror.start()
    try:
        await catch_up(mirror)
    finally:
        await mirror.stop()

    for ev in [invoice, *products, customer]:
        rows = scenario.rows(ev["entity_type"])
        row = rows[ev["after"]["id"]]
        assert row == expected_row(scenario, ev, ev["source"]["timestamp"]), ev["entity_type"]
    assert registry.get_sample_value(
        "dictamesh_mirror_rows_total", {"entity_type": "product"}
    ) == len(products)
    assert registry.get_sample_value("dictamesh_mirror_up") == 1
    for entity_type in domain.entities:
        lag = registry.get_sample_value(
            "dictamesh_mirror_lag", {"topic": domain.topic(entity_type)}
        )
        assert lag == 0
    assert registry.get_sample_value("dictamesh_mirror_batch_seconds_count")


async def _mirror_once(scenario: Scenario, domain: DomainConfig | None = None, **kw: Any) -> None:
    mirror = scenario.mirror(domain, **kw)
    await mirror.start()
    try:
        await catch_up(mirror)
    finally:
        await mirror.stop()


async def test_an_older_or_equal_version_changes_nothing(scenario: Scenario) -> None:
    domain = scenario.domain
    await scenario.create_topics()
    mirror = scenario.mirror()
    await mirror.start()
    try:
        first = event(domain, "product", 1, 10)
        newest = event(domain, "product", 1, 20)
        # In one batch: collapsed to version 20 before writing, the older one after it too.
        await scenario.produce([first, newest, event(domain, "product", 1, 15)])
        await catch_up(mirror)
        assert scenario.rows("product")[1] == expected_row(
            scenario, newest, first["source"]["timestamp"]
        )
        # In later batches: the upsert's guard keeps the row as it is.
        await scenario.produce([event(domain, "product", 1, 19, name="older")])
        await catch_up(mirror)
        await scenario.produce([event(domain, "product", 1, 20, name="same version")])
        await catch_up(mirror)
        assert scenario.rows("product")[1] == expected_row(
            scenario, newest, first["source"]["timestamp"]
        )
        newer = event(domain, "product", 1, 21, name="newer")
        await scenario.produce([newer])
        await catch_up(mirror)
    finally:
        await mirror.stop()
    row = scenario.rows("product")[1]
    assert row == expected_row(scenario, newer, first["source"]["timestamp"])
    assert row["first_seen"] < row["last_changed"]


async def test_a_delete_marks_the_row_and_keeps_its_last_values(scenario: Scenario) -> None:
    domain = scenario.domain
    await scenario.create_topics()
    created = event(domain, "customer", 5, 100, op="CREATE")
    deleted = event(domain, "customer", 5, 101, op="DELETE")
    unseen = event(domain, "customer", 6, 300, op="DELETE")
    await scenario.produce([created, deleted, unseen])
    await _mirror_once(scenario)
    rows = scenario.rows("customer")
    expected = expected_row(scenario, created, created["source"]["timestamp"])
    expected.update(
        deleted=True,
        version=101,
        event_id=deleted["event_id"],
        last_changed=deleted["source"]["timestamp"],
    )
    assert rows[5] == expected
    # A delete of an entity never seen is a tombstone: an older version cannot resurrect it.
    assert rows[6]["deleted"] is True
    assert rows[6]["version"] == 300
    assert rows[6]["name"] is None
    assert rows[6]["data"] is None

    older = event(domain, "customer", 6, 200, op="CREATE")
    recreated = event(domain, "customer", 6, 400, op="CREATE")
    await scenario.produce([older])
    await _mirror_once(scenario)
    assert scenario.rows("customer")[6]["deleted"] is True
    await scenario.produce([recreated])
    await _mirror_once(scenario)
    assert scenario.rows("customer")[6] == expected_row(
        scenario, recreated, unseen["source"]["timestamp"]
    )
    assert scenario.rows("customer")[5] == expected


async def test_replaying_the_whole_topic_yields_the_same_rows(scenario: Scenario) -> None:
    domain = scenario.domain
    await scenario.create_topics()
    events = [
        event(domain, entity_type, i, v, op="DELETE" if v % 7 == 0 else "UPDATE")
        for v in range(1, 120)
        for entity_type, i in [("invoice_item", v % 13), ("invoice", v % 5)]
    ]
    await scenario.produce(events)
    await _mirror_once(scenario)
    first = {t: scenario.rows(t) for t in ("invoice", "invoice_item")}
    assert len(first["invoice_item"]) == 13

    await _mirror_once(scenario, group_id=f"{scenario.app_id}-replay")
    assert {t: scenario.rows(t) for t in first} == first, "a replay changed rows"

    elsewhere = scenario.new_schema()
    await _mirror_once(scenario, group_id=f"{scenario.app_id}-fresh", database_url=elsewhere)
    assert {t: scenario.rows(t, elsewhere) for t in first} == first


async def test_a_field_added_to_the_config_becomes_a_column_on_restart(
    scenario: Scenario,
) -> None:
    await scenario.create_topics()
    before = event(scenario.domain, "product", 1, 1)
    await scenario.produce([before])
    await _mirror_once(scenario)

    data = domain_data()
    fields = data["entities"]["product"]["fields"]
    fields["color"] = {"type": "string", "nullable": True}
    fields["weight"] = {"type": "decimal", "precision": 6, "scale": 3, "nullable": True}
    del fields["stock"]  # removed from the config: the column stays
    grown = scenario.domain_with(data)
    after = event(grown, "product", 2, 2, color="teal", weight=Decimal("1.250"))
    await scenario.produce([after], codecs=scenario.codecs_for(grown))
    await _mirror_once(scenario, grown)

    rows = scenario.rows("product")
    assert rows[1]["color"] is None
    assert rows[1]["stock"] == before["after"]["stock"]
    assert (rows[2]["color"], rows[2]["weight"], rows[2]["stock"]) == (
        "teal",
        Decimal("1.250"),
        None,
    )
    assert rows[2]["schema_version"] == 2
    assert rows[2]["data"]["weight"] == Decimal("1.250")
    assert "stock" not in rows[2]["data"]
    columns = _columns(scenario.dsn, "product")
    assert columns["color"] == "text"
    assert columns["weight"] == "numeric(6,3)"
    assert columns["stock"] == "integer"


def _columns(dsn: str, table: str) -> dict[str, str]:
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
                (table,),
            )
            return dict(cur.fetchall())
    finally:
        conn.close()
