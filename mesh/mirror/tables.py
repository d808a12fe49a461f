"""The mirror's tables, derived from the domain config: one per entity type.

Each table holds the entity's typed fields, then the catalog's metadata columns, then
``data``, a ``jsonb`` copy of the ``after`` record. The primary key is ``(tenant, <key
field>)``: tenants' ids collide on purpose (customer 1 exists in each tenant's Directus),
and tenant first keeps each tenant's rows together in the index its readers' row-level
security filter uses (:mod:`mesh.mirror.security`). ``urn`` stays unique on its own: it
begins with the tenant, so that index is grouped by tenant as well, and a check keeps the
``tenant`` column and the URN's tenant the same.

Non-nullable fields are enforced with ``CHECK (deleted OR <field> IS NOT NULL)`` rather
than ``NOT NULL``: a DELETE of an entity the mirror never saw (Directus reports items
deleted before they could be read) is still recorded as a tombstone row, so that an older
version arriving later cannot resurrect the entity, and a tombstone has no field values.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.domain import DomainConfig, FieldSpec, FieldType
from mesh.errors import ConfigError

__all__ = [
    "DATA_COLUMN",
    "METADATA_COLUMNS",
    "REQUIRED_SUFFIX",
    "TENANT_COLUMN",
    "URN_TENANT_CHECK",
    "Column",
    "MirrorTable",
    "mirror_tables",
    "quote_ident",
    "sql_type",
]


@dataclass(frozen=True)
class Column:
    """One column: its name, SQL type and whether live rows may hold NULL in it."""

    name: str
    sql_type: str
    nullable: bool = True

    @property
    def base_type(self) -> str:
        """The type without its modifier (``numeric(12,2)`` → ``numeric``), for array casts.

        Why: casting the parameter to ``numeric(12,2)[]`` would round silently before the
        column could reject an out-of-range value; the column's own type still applies.
        """
        return self.sql_type.split("(", 1)[0]


METADATA_COLUMNS: tuple[Column, ...] = (
    Column("urn", "text", nullable=False),
    Column("tenant", "text", nullable=False),
    Column("source_system", "text", nullable=False),
    Column("source_instance", "text", nullable=False),
    Column("source_collection", "text", nullable=False),
    Column("version", "bigint", nullable=False),
    Column("schema_subject", "text"),
    Column("schema_id", "integer", nullable=False),
    Column("schema_version", "integer"),
    Column("first_seen", "timestamptz", nullable=False),
    Column("last_changed", "timestamptz", nullable=False),
    Column("deleted", "boolean", nullable=False),
    Column("event_id", "text", nullable=False),
)
"""Written from each event's envelope, in this order after the typed fields."""

TENANT_COLUMN = "tenant"
"""The metadata column naming the row's tenant: first in the primary key, and what the
row-level security policies compare."""

URN_TENANT_CHECK = ("urn_of_tenant", "CHECK (split_part(urn, ':', 3) = tenant)")
"""``(name, clause)``: a row's ``tenant`` is its URN's (``urn:dictamesh:<tenant>:…``), so
no row can claim one tenant in the column the policies read and another in its URN."""

DATA_COLUMN = Column("data", "jsonb")
"""Built by Postgres from the typed values, so decimals stay exact JSON numbers."""

_RESERVED = {c.name for c in METADATA_COLUMNS} | {DATA_COLUMN.name}


def sql_type(spec: FieldSpec) -> str:
    """The Postgres type of a field of the domain config."""
    match spec.type:
        case FieldType.STRING:
            return "text"
        case FieldType.INTEGER:
            return "integer"
        case FieldType.LONG:
            return "bigint"
        case FieldType.FLOAT:
            return "double precision"
        case FieldType.BOOLEAN:
            return "boolean"
        case FieldType.DECIMAL:
            return f"numeric({spec.precision},{spec.scale})"
        case FieldType.TIMESTAMP:
            return "timestamptz"


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (entity types may be reserved words: ``user``)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class MirrorTable:
    """The table of one entity type."""

    entity_type: str
    key: str
    fields: tuple[Column, ...]
    """Typed columns, in config order."""
    key_type: FieldType

    @property
    def name(self) -> str:
        """The table is named after the entity type (``invoice_item``)."""
        return self.entity_type

    @property
    def columns(self) -> tuple[Column, ...]:
        """Every written column in row order: typed fields, then metadata (not ``data``)."""
        return self.fields + METADATA_COLUMNS

    @property
    def primary_key(self) -> tuple[str, str]:
        """``(tenant, <key field>)``: an entity's key is unique within its tenant only."""
        return (TENANT_COLUMN, self.key)

    def create_sql(self) -> str:
        """``CREATE TABLE IF NOT EXISTS`` with every column and constraint of the layout."""
        lines = [f"{quote_ident(c.name)} {c.sql_type}" for c in self.fields]
        lines += [
            f"{quote_ident(c.name)} {c.sql_type}{'' if c.nullable else ' NOT NULL'}"
            for c in (*METADATA_COLUMNS, DATA_COLUMN)
        ]
        lines.append(f"PRIMARY KEY ({', '.join(map(quote_ident, self.primary_key))})")
        lines.append("UNIQUE (urn)")
        lines.append(f"CONSTRAINT {quote_ident(URN_TENANT_CHECK[0])} {URN_TENANT_CHECK[1]}")
        lines += [f"CONSTRAINT {quote_ident(name)} {check}" for name, check in self.checks()]
        body = ",\n  ".join(lines)
        return f"CREATE TABLE IF NOT EXISTS {quote_ident(self.name)} (\n  {body}\n)"

    def checks(self) -> list[tuple[str, str]]:
        """``(constraint name, CHECK clause)`` for each non-nullable field but the key."""
        return [
            (required_check_name(c.name), f"CHECK (deleted OR {quote_ident(c.name)} IS NOT NULL)")
            for c in self.fields
            if not c.nullable and c.name != self.key
        ]


REQUIRED_SUFFIX = "_required"


def required_check_name(column: str) -> str:
    """Name of the constraint that makes ``column`` required in live rows."""
    return f"{column}{REQUIRED_SUFFIX}"


def mirror_tables(domain: DomainConfig) -> dict[str, MirrorTable]:
    """The mirror table of every entity type; :class:`ConfigError` on a name clash."""
    tables: dict[str, MirrorTable] = {}
    for entity_type, entity in domain.entities.items():
        for name in entity.fields:
            if name in _RESERVED:
                raise ConfigError(
                    f"field '{name}' clashes with a metadata column of the Postgres mirror "
                    f"(reserved: {', '.join(sorted(_RESERVED))}); rename the field",
                    key=f"entities.{entity_type}.fields.{name}",
                )
        fields = tuple(
            Column(name, sql_type(spec), nullable=spec.nullable)
            for name, spec in entity.fields.items()
        )
        tables[entity_type] = MirrorTable(
            entity_type, entity.key, fields, entity.fields[entity.key].type
        )
    return tables
