"""The checked-in Avro schemas follow the domain config; drift is caught."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fastavro
import pytest

from mesh.domain import load_domain
from mesh.errors import ConfigError
from mesh.schemas import after_path, after_schema, load_event_schemas
from mesh.settings import Settings

SETTINGS = Settings()


def test_checked_in_after_records_equal_the_domain_config() -> None:
    domain = load_domain(SETTINGS.domain_config)
    for entity_type in domain.entities:
        on_disk = json.loads(after_path(SETTINGS.schemas_dir, entity_type).read_text())
        assert on_disk == after_schema(domain, entity_type), entity_type


def test_event_schemas_are_valid_avro_with_the_envelope() -> None:
    domain = load_domain(SETTINGS.domain_config)
    schemas = load_event_schemas(domain, SETTINGS.schemas_dir)
    assert set(schemas) == set(domain.entities)
    invoice = schemas["invoice"]
    assert invoice["name"] == "InvoiceChanged"
    fields = {f["name"]: f for f in invoice["fields"]}
    assert list(fields) == [
        "event_id", "tenant", "entity_type", "entity_id", "op", "source",
        "occurred_at", "changed_fields", "after",
    ]  # fmt: skip
    assert fields["op"]["type"]["symbols"] == ["CREATE", "UPDATE", "DELETE", "SNAPSHOT"]
    after = fields["after"]["type"][1]
    assert after["name"] == "Invoice"
    total = next(f for f in after["fields"] if f["name"] == "total")
    assert total["type"] == {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}
    for schema in schemas.values():
        fastavro.parse_schema(schema)


def test_a_field_added_to_the_config_but_not_the_schema_is_drift(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(SETTINGS.schemas_dir, schemas)
    config = tmp_path / "domain.yaml"
    config.write_text(
        SETTINGS.domain_config.read_text().replace(
            "      stock: {type: integer}\n",
            "      stock: {type: integer}\n      weight: {type: float, nullable: true}\n",
        )
    )
    domain = load_domain(config)
    with pytest.raises(ConfigError, match=r"product\.avsc: differs from the fields of 'product'"):
        load_event_schemas(domain, schemas)
