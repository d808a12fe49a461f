"""Avro change-event encoding in the Confluent wire format."""

from mesh.codec.avro import AvroEventCodec, build_codecs
from mesh.codec.registry import RegistryClient
from mesh.codec.wire import MAGIC_BYTE, pack, unpack

__all__ = ["MAGIC_BYTE", "AvroEventCodec", "RegistryClient", "build_codecs", "pack", "unpack"]
