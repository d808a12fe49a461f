"""Avro change-event encoding in the Confluent wire format."""

from mesh.codec.avro import AvroEventCodec, build_codecs
from mesh.codec.registry import SchemaStore
from mesh.codec.wire import MAGIC_BYTE, pack, unpack

__all__ = ["MAGIC_BYTE", "AvroEventCodec", "SchemaStore", "build_codecs", "pack", "unpack"]
