"""DictaMesh's schema registry: a small server speaking the Confluent Schema Registry API.

It backs the dev stack and tests, where no Confluent or Karapace can be installed;
production points ``SCHEMA_REGISTRY_URL`` at one of those instead. Avro only.

    app = create_registry_app(Path(".state/registry.db"))      # embed in aiohttp
    await serve_registry("127.0.0.1", 8081, Path(".state/registry.db"))  # run until cancelled

Modules: ``schema`` (parse, validate, canonical form), ``compatibility`` (Avro resolution
rules, pure), ``store`` (SQLite), ``server`` (HTTP routes).
"""

from mesh_tooling.registry.compatibility import CompatibilityLevel, check, check_compatibility
from mesh_tooling.registry.schema import ParsedSchema, parse_schema
from mesh_tooling.registry.server import CONTENT_TYPE, create_registry_app, serve_registry
from mesh_tooling.registry.store import SchemaStore

__all__ = [
    "CONTENT_TYPE",
    "CompatibilityLevel",
    "ParsedSchema",
    "SchemaStore",
    "check",
    "check_compatibility",
    "create_registry_app",
    "parse_schema",
    "serve_registry",
]
