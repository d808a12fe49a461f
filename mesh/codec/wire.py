"""The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, the Avro body."""

from __future__ import annotations

import struct

from mesh.errors import CodecError

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")


def pack(schema_id: int, body: bytes) -> bytes:
    """Prefix an Avro body with the wire-format header for ``schema_id``."""
    return _HEADER.pack(MAGIC_BYTE, schema_id) + body


def unpack(data: bytes) -> tuple[int, memoryview]:
    """Split a message into its schema id and Avro body.

    Raises :class:`CodecError` when the message is not in the Confluent wire format.
    """
    if len(data) < _HEADER.size:
        raise CodecError(
            f"message of {len(data)} bytes is too short for the Confluent wire format "
            f"(needs a {_HEADER.size}-byte header)"
        )
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise CodecError(
            f"message starts with byte {magic}, not the wire format's magic byte {MAGIC_BYTE}; "
            "was it produced without a schema-registry serializer?"
        )
    return schema_id, memoryview(data)[_HEADER.size :]
