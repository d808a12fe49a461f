"""Avro schemas of the change events: the shared envelope plus one ``after`` record per
entity type.

``schemas/envelope.avsc`` holds the envelope; its ``after`` field names the placeholder
type ``dictamesh.entities.After``. ``schemas/after/<entity_type>.avsc`` holds each entity's
``after`` record, which must equal what :func:`after_schema` derives from the domain
config (``mesh schemas --check`` and the tests fail when they drift). The event schema of
an entity type is the envelope with the placeholder replaced by that record, named
``dictamesh.events.<GraphqlName>Changed`` and registered under ``<topic>-value``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from mesh.domain import DomainConfig, FieldSpec, FieldType
from mesh.errors import ConfigError

ENTITY_NAMESPACE = "dictamesh.entities"
EVENT_NAMESPACE = "dictamesh.events"

Schema = dict[str, Any]


def _avro_type(spec: FieldSpec) -> Any:
    base: Any
    match spec.type:
        case FieldType.STRING:
            base = "string"
        case FieldType.INTEGER:
            base = "int"
        case FieldType.LONG:
            base = "long"
        case FieldType.FLOAT:
            base = "double"
        case FieldType.BOOLEAN:
            base = "boolean"
        case FieldType.DECIMAL:
            base = {
                "type": "bytes",
                "logicalType": "decimal",
                "precision": spec.precision,
                "scale": spec.scale,
            }
        case FieldType.TIMESTAMP:
            base = {"type": "long", "logicalType": "timestamp-millis"}
    return ["null", base] if spec.nullable else base


def after_schema(domain: DomainConfig, entity_type: str) -> Schema:
    """The Avro ``after`` record of ``entity_type``, derived from the domain config."""
    entity = domain.entities[entity_type]
    fields: list[Schema] = []
    for name, spec in entity.fields.items():
        field: Schema = {"name": name, "type": _avro_type(spec)}
        if spec.nullable:
            field["default"] = None
        if spec.references:
            field["doc"] = f"id of the referenced {spec.references}"
        fields.append(field)
    return {
        "type": "record",
        "name": entity.graphql_name,
        "namespace": ENTITY_NAMESPACE,
        "doc": f"State of the {entity_type} after the change (null on DELETE).",
        "fields": fields,
    }


def _read_json(path: Path) -> Schema:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the schema: {exc.strerror}", source=str(path)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"invalid JSON at line {exc.lineno}: {exc.msg}", source=str(path)
        ) from None
    if not isinstance(data, dict):
        raise ConfigError("a schema file must hold a JSON object", source=str(path))
    return data


def after_path(schemas_dir: Path, entity_type: str) -> Path:
    """Where the ``after`` record of ``entity_type`` is kept."""
    return schemas_dir / "after" / f"{entity_type}.avsc"


def load_envelope(schemas_dir: Path) -> Schema:
    """The envelope template from ``schemas/envelope.avsc``."""
    return _read_json(schemas_dir / "envelope.avsc")


def event_schema(envelope: Schema, after: Schema, graphql_name: str) -> Schema:
    """Compose one entity type's event schema from the envelope and its ``after`` record."""
    schema = copy.deepcopy(envelope)
    schema["name"] = f"{graphql_name}Changed"
    schema["namespace"] = EVENT_NAMESPACE
    for field in schema["fields"]:
        if field["name"] == "after":
            field["type"] = ["null", after]
            break
    else:
        raise ConfigError("the envelope has no 'after' field", key="fields")
    return schema


def load_event_schemas(domain: DomainConfig, schemas_dir: Path) -> dict[str, Schema]:
    """Every entity type's event schema, from the checked-in files.

    Raises :class:`ConfigError` when a file is missing or differs from the domain config.
    """
    envelope = load_envelope(schemas_dir)
    schemas: dict[str, Schema] = {}
    for entity_type, entity in domain.entities.items():
        path = after_path(schemas_dir, entity_type)
        if not path.exists():
            raise ConfigError(
                f"no after record for entity type '{entity_type}'; "
                "run `mesh schemas --write` to generate it from the domain config",
                source=str(path),
            )
        after = _read_json(path)
        if after != after_schema(domain, entity_type):
            raise ConfigError(
                f"differs from the fields of '{entity_type}' in the domain config; "
                "run `mesh schemas --write` after changing the config (and review the diff)",
                source=str(path),
            )
        schemas[entity_type] = event_schema(envelope, after, entity.graphql_name)
    return schemas


def write_after_schemas(domain: DomainConfig, schemas_dir: Path) -> list[Path]:
    """Write each entity type's derived ``after`` record; return the files that changed."""
    changed: list[Path] = []
    for entity_type in domain.entities:
        path = after_path(schemas_dir, entity_type)
        text = json.dumps(after_schema(domain, entity_type), indent=2) + "\n"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed
