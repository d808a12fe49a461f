"""The codec of change events: fastavro bodies in the Confluent wire format."""

from __future__ import annotations

import io
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from mesh.codec.plain import plain_converter, strip_logical
from mesh.codec.registry import RegistryClient
from mesh.codec.wire import pack, unpack
from mesh.domain import DomainConfig
from mesh.errors import CodecError, MeshError


class AvroEventCodec:
    """Encodes dicts with one entity type's event schema; decodes any registered writer.

    The schema is registered under ``subject`` on first use. Decoding resolves the
    message's writer schema (fetched by id) to this codec's schema, so consumers see one
    shape even when producers write older or newer compatible versions.
    """

    def __init__(self, registry: RegistryClient, subject: str, schema: dict[str, Any]) -> None:
        self.registry = registry
        self.subject = subject
        self.schema = schema
        self._parsed = parse_schema(schema)
        self._schema_id: int | None = None
        # Writer schema per id, and whether it is this codec's own schema.
        self._writers: dict[int, tuple[Any, bool]] = {}
        # The schema without logical types and what makes its raw values plain (None when
        # some logical type is not handled by mesh.codec.plain): see loads_plain.
        self._to_plain = plain_converter(schema)
        self._raw_schema: Any = parse_schema(strip_logical(schema)) if self._to_plain else None

    @property
    def schema_id(self) -> int:
        """The registry id of this codec's schema (registered on first access)."""
        if self._schema_id is None:
            self._schema_id = self.registry.register(self.subject, self.schema)
        return self._schema_id

    def dumps(self, obj: Any) -> bytes:
        """``obj`` in the Confluent wire format (:class:`~mesh.errors.CodecError` when it
        does not fit the schema)."""
        buffer = io.BytesIO()
        try:
            schemaless_writer(buffer, self._parsed, obj)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CodecError(
                f"event does not fit schema '{self.subject}': {type(exc).__name__}: {exc}"
            ) from exc
        return pack(self.schema_id, buffer.getvalue())

    def loads(self, s: bytes) -> Any:
        """The event in ``s``, resolved to this codec's schema."""
        return self._loads(s, plain=False)

    def loads_plain(self, s: bytes) -> Any:
        """The event in ``s`` as :meth:`loads` gives it, except that logical values may
        come as the plain values JSON carries: timestamps as ISO 8601 text, exactly as
        orjson writes the ``datetime`` (``2026-11-01T12:00:00.250000+00:00``), decimals as
        the ``Decimal``'s string. Either way ``orjson.dumps(..., default=str)`` of the
        result gives the same bytes; decoding costs about a third less.

        The plain form is made when the message was written with this codec's own schema
        and :mod:`mesh.codec.plain` handles its logical types; otherwise this is
        :meth:`loads`."""
        return self._loads(s, plain=True)

    def _loads(self, s: bytes, *, plain: bool) -> Any:
        schema_id, body = unpack(s)
        known = self._writers.get(schema_id)
        if known is None:
            writer = self.registry.writer_schema(schema_id)
            known = self._writers[schema_id] = (writer, writer == self._parsed)
        writer, same = known
        try:
            if same and plain and self._to_plain is not None:
                event: Any = schemaless_reader(io.BytesIO(body), self._raw_schema, None)
                self._to_plain(event)
                return event
            # Resolving a writer schema against the reader costs a third of a decode;
            # skip it when the message was written with this very schema.
            return schemaless_reader(io.BytesIO(body), writer, None if same else self._parsed)
        except MeshError:
            raise
        except Exception as exc:  # fastavro raises many types on corrupt bodies
            raise CodecError(
                f"cannot decode a message with schema id {schema_id} as '{self.subject}': "
                f"{type(exc).__name__}: {exc}"
            ) from exc


def build_codecs(
    domain: DomainConfig,
    schemas: dict[str, dict[str, Any]],
    registry: RegistryClient,
    tenant: str | None = None,
) -> dict[str, AvroEventCodec]:
    """One codec per entity type, each bound to the ``<topic>-value`` subject of
    ``tenant``'s topic (which only matters for encoding: decoding follows the writer's
    schema id)."""
    return {
        entity_type: AvroEventCodec(registry, f"{domain.topic(entity_type, tenant)}-value", schema)
        for entity_type, schema in schemas.items()
    }
