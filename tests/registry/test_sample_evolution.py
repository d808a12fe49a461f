"""The sample domain's schema changes are ones the registry accepts: each change event
schema, as the workers register it, is BACKWARD compatible with the one it replaces.

``previous/`` keeps the ``after`` records as they were before a change (here: before the
sagas' ``saga_key`` on invoices and their items); the check is the registry's own code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mesh_tooling.registry.compatibility import CompatibilityLevel, check, check_compatibility
from mesh_tooling.registry.schema import ParsedSchema, parse_schema

from mesh.domain import DomainConfig
from mesh.schemas import Schema, event_schema, load_envelope, load_event_schemas
from mesh.settings import Settings

PREVIOUS = Path(__file__).parent / "previous"


def parsed(schema: Schema) -> ParsedSchema:
    return parse_schema(json.dumps(schema))


@pytest.mark.parametrize("entity_type", ["invoice", "invoice_item"])
def test_the_saga_key_keeps_the_event_schema_backward_compatible(
    sample_domain: DomainConfig, entity_type: str
) -> None:
    schemas_dir = Settings().schemas_dir
    current = load_event_schemas(sample_domain, schemas_dir)[entity_type]
    before = json.loads((PREVIOUS / f"{entity_type}.avsc").read_text())
    graphql_name = sample_domain.entities[entity_type].graphql_name
    previous = event_schema(load_envelope(schemas_dir), before, graphql_name)

    added = {f["name"] for f in current_after(current)} - {f["name"] for f in before["fields"]}
    assert added == {"saga_key"}
    new, old = parsed(current), parsed(previous)
    assert check_compatibility(new, [(1, old)], CompatibilityLevel.BACKWARD) == []
    # Readers that still have the old schema skip the new field, too.
    assert check_compatibility(new, [(1, old)], CompatibilityLevel.FULL) == []


def test_a_new_field_without_a_default_would_be_refused(sample_domain: DomainConfig) -> None:
    """The check above is not vacuous: the same change without ``default: null`` fails."""
    schemas_dir = Settings().schemas_dir
    current = load_event_schemas(sample_domain, schemas_dir)["invoice"]
    for field in current_after(current):
        if field["name"] == "saga_key":
            del field["default"]
    before = json.loads((PREVIOUS / "invoice.avsc").read_text())
    previous = event_schema(load_envelope(schemas_dir), before, "Invoice")
    reasons = check_compatibility(
        parsed(current), [(1, parsed(previous))], CompatibilityLevel.BACKWARD
    )
    # The after record sits in a union with null: the registry names the union branch.
    assert len(reasons) == 1
    assert reasons[0].startswith("MISSING_UNION_BRANCH")
    assert "no branch reads record dictamesh.entities.Invoice" in reasons[0]
    after = next(f for f in current["fields"] if f["name"] == "after")["type"][1]
    assert check(parsed(after), parsed(before)) == [
        "READER_FIELD_MISSING_DEFAULT_VALUE at /fields/6: reader field 'saga_key' has no "
        "default and the writer lacks it"
    ]


def current_after(event: Schema) -> list[Schema]:
    """The fields of the ``after`` record inside an event schema."""
    after = next(f for f in event["fields"] if f["name"] == "after")
    record = next(branch for branch in after["type"] if isinstance(branch, dict))
    fields: list[Schema] = record["fields"]
    return fields
