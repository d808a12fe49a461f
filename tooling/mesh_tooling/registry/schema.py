"""Parsing, validation and canonical form of Avro schemas.

:func:`parse_schema` turns schema text into a :class:`ParsedSchema`:

* validated twice: by ``fastavro.parse_schema`` (types, defaults, enum symbols) and by a
  structural walk here that also rejects what fastavro lets through but Avro's Java parser
  (Confluent's) refuses: records without ``fields``, duplicate field names, illegal names,
  nested unions and duplicate union branches;
* normalised: every named type carries its full name (``namespace`` folded in), aliases are
  fully qualified, ``{"type": "int"}`` becomes ``"int"``, and a named type is defined once and
  referenced by full name afterwards;
* given a canonical text (the normalised JSON with sorted keys, no whitespace) that decides
  identity: two texts that differ only in whitespace, key order or namespace spelling get the
  same schema id. Unlike Avro's Parsing Canonical Form it keeps defaults, aliases, docs,
  logical types and custom properties, because those change what a schema means to readers
  (a default added is a different schema, as it is for Confluent).

Every failure raises :class:`~mesh.errors.RegistryError` with Confluent's 42201.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fastavro

from mesh.errors import RegistryError

__all__ = ["PRIMITIVES", "ParsedSchema", "invalid_schema", "parse_schema"]

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Normalised schema nodes are plain JSON values: a str (primitive or full name of a named
# type), a list (union) or a dict (everything else).
Node = Any


def invalid_schema(detail: str) -> RegistryError:
    """The Confluent error for a schema that cannot be parsed (HTTP 422, code 42201)."""
    return RegistryError(f"Invalid schema: {detail}", status=422, error_code=42201)


@dataclass(frozen=True, eq=False)
class ParsedSchema:
    """An Avro schema that passed validation.

    ``root`` is the normalised schema, ``names`` maps every full name defined by the schema or
    its references to its normalised definition, ``canonical`` is the identity text.
    """

    text: str
    root: Node
    names: Mapping[str, dict[str, Any]]
    canonical: str
    fastavro_names: dict[str, Any] = field(repr=False, compare=False)

    def resolve(self, node: Node) -> Node:
        """Follow a by-name reference to the named type's definition; other nodes unchanged."""
        if isinstance(node, str) and node not in PRIMITIVES:
            return self.names[node]
        return node


def parse_schema(text: str, references: Mapping[str, ParsedSchema] | None = None) -> ParsedSchema:
    """Validate and normalise Avro schema ``text``.

    ``references`` maps a reference name to the already parsed referenced schema; the named
    types they define may be used by name in ``text`` (Confluent schema references).
    """
    try:
        raw = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise invalid_schema(f"schema is not valid JSON ({exc})") from exc
    known: dict[str, dict[str, Any]] = {}
    fastavro_names: dict[str, Any] = {}
    for ref in (references or {}).values():
        known.update(ref.names)
        fastavro_names.update(ref.fastavro_names)
    own_names: dict[str, dict[str, Any]] = {}
    root = _Normaliser(known, own_names).node(raw, namespace="")
    try:
        # fastavro checks what the walk above does not: default values against their types.
        fastavro.parse_schema(
            json.loads(text), named_schemas=fastavro_names, _write_hint=False, _force=True
        )
    except Exception as exc:  # fastavro raises KeyError, TypeError, SchemaParseException...
        raise invalid_schema(f"{type(exc).__name__}: {exc}") from exc
    canonical = json.dumps(root, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return ParsedSchema(
        text=text,
        root=root,
        names={**known, **own_names},
        canonical=canonical,
        fastavro_names=fastavro_names,
    )


def _split(name: str, namespace: str) -> tuple[str, str]:
    """Full name and namespace of ``name`` defined inside ``namespace``."""
    if "." in name:
        return name, name.rpartition(".")[0]
    return (f"{namespace}.{name}" if namespace else name), namespace


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not all(_NAME_RE.fullmatch(p) for p in name.split(".")):
        raise invalid_schema(f"illegal {what} name {name!r}")
    return name


class _Normaliser:
    """One walk over a schema's JSON; collects the named types it defines."""

    def __init__(self, known: Mapping[str, dict[str, Any]], defined: dict[str, Any]) -> None:
        self.known = known
        self.defined = defined

    def node(self, raw: object, namespace: str) -> Node:
        if isinstance(raw, str):
            return self.reference(raw, namespace)
        if isinstance(raw, list):
            return self.union(raw, namespace)
        if not isinstance(raw, dict):
            raise invalid_schema(f"a schema must be a string, object or array, not {raw!r}")
        kind = raw.get("type")
        if isinstance(kind, (dict, list)):
            # {"type": {...}} wraps a schema; Avro reads the inner one.
            return self.node(kind, namespace)
        if not isinstance(kind, str):
            raise invalid_schema(f"no valid 'type' in {raw!r}")
        if kind in PRIMITIVES:
            extra = {k: v for k, v in raw.items() if k != "type"}
            return {"type": kind, **extra} if extra else kind
        if kind in ("record", "error"):
            return self.record(raw, namespace)
        if kind == "enum":
            return self.enum(raw, namespace)
        if kind == "fixed":
            return self.fixed(raw, namespace)
        if kind == "array":
            if "items" not in raw:
                raise invalid_schema("array without 'items'")
            return {**raw, "items": self.node(raw["items"], namespace)}
        if kind == "map":
            if "values" not in raw:
                raise invalid_schema("map without 'values'")
            return {**raw, "values": self.node(raw["values"], namespace)}
        return self.reference(kind, namespace)

    def reference(self, name: str, namespace: str) -> str:
        if name in PRIMITIVES:
            return name
        full, _ = _split(name, namespace)
        for candidate in (full, name):  # Avro falls back to the null namespace
            if candidate in self.defined or candidate in self.known:
                return candidate
        raise invalid_schema(f"unknown type {name!r}")

    def union(self, raw: list[object], namespace: str) -> list[Node]:
        branches = [self.node(b, namespace) for b in raw]
        seen: set[str] = set()
        for branch in branches:
            if isinstance(branch, list):
                raise invalid_schema("unions may not immediately contain other unions")
            key = self._branch_key(branch)
            if key in seen:
                raise invalid_schema(f"duplicate {key!r} in union")
            seen.add(key)
        return branches

    def _branch_key(self, branch: Node) -> str:
        if isinstance(branch, str):
            return branch
        if branch.get("type") in _NAMED:
            return str(branch["name"])
        return str(branch["type"])

    def define(self, raw: dict[str, Any], namespace: str) -> tuple[dict[str, Any], str]:
        """Register the named type ``raw``; returns its normalised head and its namespace."""
        name = _check_name(raw.get("name"), raw["type"])
        ns_attr = raw.get("namespace")
        if ns_attr is not None and not isinstance(ns_attr, str):
            raise invalid_schema(f"illegal namespace {ns_attr!r}")
        if "." not in name and ns_attr is not None:
            namespace = ns_attr
            if namespace:
                _check_name(namespace, "namespace")
        full, own_ns = _split(name, namespace)
        if full in PRIMITIVES or full in self.defined or full in self.known:
            raise invalid_schema(f"redefined named type {full!r}")
        aliases = raw.get("aliases", [])
        if not isinstance(aliases, list):
            raise invalid_schema(f"aliases of {full!r} must be an array")
        head = {k: v for k, v in raw.items() if k != "namespace"}
        head["name"] = full
        if aliases:
            head["aliases"] = [_split(_check_name(a, "alias"), own_ns)[0] for a in aliases]
        # Registered before children are walked so that recursive references resolve.
        self.defined[full] = head
        return head, own_ns

    def record(self, raw: dict[str, Any], namespace: str) -> dict[str, Any]:
        head, own_ns = self.define(raw, namespace)
        fields = raw.get("fields")
        if not isinstance(fields, list):
            raise invalid_schema(f"record {head['name']!r} has no 'fields' array")
        normalised: list[dict[str, Any]] = []
        names: set[str] = set()
        for fdef in fields:
            if not isinstance(fdef, dict) or "type" not in fdef:
                raise invalid_schema(f"bad field {fdef!r} in record {head['name']!r}")
            fname = _check_name(fdef.get("name"), "field")
            if fname in names:
                raise invalid_schema(f"duplicate field {fname!r} in record {head['name']!r}")
            names.add(fname)
            normalised.append({**fdef, "type": self.node(fdef["type"], own_ns)})
        head["type"] = "record"
        head["fields"] = normalised
        return head

    def enum(self, raw: dict[str, Any], namespace: str) -> dict[str, Any]:
        head, _ = self.define(raw, namespace)
        symbols = raw.get("symbols")
        if not isinstance(symbols, list):
            raise invalid_schema(f"enum {head['name']!r} has no 'symbols' array")
        for symbol in symbols:
            _check_name(symbol, "enum symbol")
        return head

    def fixed(self, raw: dict[str, Any], namespace: str) -> dict[str, Any]:
        head, _ = self.define(raw, namespace)
        size = raw.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise invalid_schema(f"fixed {head['name']!r} needs a non-negative integer 'size'")
        return head
