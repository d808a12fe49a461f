"""Avro schema compatibility, following Avro's schema-resolution rules.

Pure functions, no I/O. The rules are those of Avro's Java ``SchemaCompatibility`` (which
Confluent's registry runs), so a schema accepted here is accepted in production too:

* records: each reader field is matched in the writer by name, else by one of the reader
  field's aliases; a reader field the writer lacks needs a default. Writer fields the reader
  lacks are skipped. Record, enum and fixed names match on the unqualified name, or when
  the writer's full name is one of the reader's aliases;
* enums: every writer symbol must exist in the reader, unless the reader has a default;
* fixed: names and sizes match; arrays and maps: items / values recursively;
* unions: a writer union needs every branch readable; a reader union needs some branch
  that reads the writer;
* promotions: int→long/float/double, long→float/double, float→double, string↔bytes.
  Logical types are ignored: they ride on their underlying type.

Recursive types are checked co-inductively: a (reader, writer) pair of named types met again
while it is being checked is assumed compatible, as in Avro.

    >>> check(reader, writer)          # [] when reader can read data written with writer
    >>> check_compatibility(new, [(1, v1), (2, v2)], CompatibilityLevel.BACKWARD)
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from mesh_tooling.registry.schema import ParsedSchema

__all__ = ["CompatibilityLevel", "check", "check_compatibility"]

_PROMOTIONS: dict[str, frozenset[str]] = {
    "long": frozenset({"int"}),
    "float": frozenset({"int", "long"}),
    "double": frozenset({"int", "long", "float"}),
    "bytes": frozenset({"string"}),
    "string": frozenset({"bytes"}),
}
_NAMED = frozenset({"record", "enum", "fixed"})


class CompatibilityLevel(StrEnum):
    """Confluent compatibility levels; BACKWARD is the registry default."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @property
    def transitive(self) -> bool:
        """Checked against every earlier version rather than the latest only."""
        return self.value.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        """The new schema must read data written with earlier ones."""
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        """Earlier schemas must read data written with the new one."""
        return self.value.startswith(("FORWARD", "FULL"))


def check(reader: ParsedSchema, writer: ParsedSchema) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader``; empty if it can.

    Each reason reads ``KIND at /path/in/reader: detail``, KIND being Avro's incompatibility
    type (TYPE_MISMATCH, NAME_MISMATCH, FIXED_SIZE_MISMATCH, MISSING_ENUM_SYMBOLS,
    READER_FIELD_MISSING_DEFAULT_VALUE, MISSING_UNION_BRANCH).
    """
    found = _Checker(reader, writer).check(reader.root, writer.root, "")
    return list(dict.fromkeys(found))  # a named type used twice reports once


def check_compatibility(
    new: ParsedSchema,
    previous: Sequence[tuple[int, ParsedSchema]],
    level: CompatibilityLevel,
) -> list[str]:
    """Why ``new`` may not follow ``previous`` under ``level``; empty means it may.

    ``previous`` holds ``(version, schema)`` pairs, oldest first; non-transitive levels
    look at the last one only.
    """
    if level is CompatibilityLevel.NONE or not previous:
        return []
    reasons: list[str] = []
    for version, old in previous if level.transitive else previous[-1:]:
        if level.backward:
            reasons += [f"{r} (new schema reading version {version})" for r in check(new, old)]
        if level.forward:
            reasons += [f"{r} (version {version} reading new schema)" for r in check(old, new)]
    return reasons


def _kind(node: Any) -> str:
    if isinstance(node, list):
        return "union"
    if isinstance(node, str):
        return node
    kind = str(node["type"])
    return "record" if kind == "error" else kind


def _describe(node: Any) -> str:
    kind = _kind(node)
    return f"{kind} {node['name']}" if kind in _NAMED else kind


def _short(fullname: str) -> str:
    return fullname.rpartition(".")[2]


class _Checker:
    def __init__(self, reader: ParsedSchema, writer: ParsedSchema) -> None:
        self.reader = reader
        self.writer = writer
        # (reader name, writer name) -> reasons; [] while in progress, which is what lets
        # recursive types terminate.
        self.memo: dict[tuple[str, str], list[str]] = {}

    def check(self, reader: Any, writer: Any, path: str) -> list[str]:
        r = self.reader.resolve(reader)
        w = self.writer.resolve(writer)
        r_kind, w_kind = _kind(r), _kind(w)
        if r_kind == w_kind and r_kind in _NAMED:
            key = (r["name"], w["name"])
            if key not in self.memo:
                self.memo[key] = []
                self.memo[key] = self.named(r_kind, r, w, path)
            return self.memo[key]
        if r_kind == w_kind:
            return self.same_kind(r_kind, r, w, path)
        if w_kind == "union":
            return [m for branch in w for m in self.check(r, branch, path)]
        if r_kind == "union":
            if any(not self.check(branch, w, path) for branch in r):
                return []
            return [_reason("MISSING_UNION_BRANCH", path, f"no branch reads {_describe(w)}")]
        if w_kind in _PROMOTIONS.get(r_kind, ()):
            return []
        return [_reason("TYPE_MISMATCH", path, f"{_describe(r)} cannot read {_describe(w)}")]

    def same_kind(self, kind: str, r: Any, w: Any, path: str) -> list[str]:
        if kind == "array":
            return self.check(r["items"], w["items"], f"{path}/items")
        if kind == "map":
            return self.check(r["values"], w["values"], f"{path}/values")
        if kind == "union":
            return [m for branch in w for m in self.check(r, branch, path)]
        return []  # same primitive

    def named(self, kind: str, r: dict[str, Any], w: dict[str, Any], path: str) -> list[str]:
        if _short(r["name"]) != _short(w["name"]) and w["name"] not in r.get("aliases", []):
            detail = f"reader {r['name']} does not match writer {w['name']} or its aliases"
            return [_reason("NAME_MISMATCH", f"{path}/name", detail)]
        if kind == "fixed":
            if r["size"] == w["size"]:
                return []
            detail = f"reader {r['name']} has size {r['size']}, writer has {w['size']}"
            return [_reason("FIXED_SIZE_MISMATCH", f"{path}/size", detail)]
        if kind == "enum":
            missing = [s for s in w["symbols"] if s not in r["symbols"]]
            if not missing or r.get("default") in r["symbols"]:
                return []
            detail = f"reader {r['name']} has no default and lacks writer symbols {missing}"
            return [_reason("MISSING_ENUM_SYMBOLS", f"{path}/symbols", detail)]
        return self.fields(r, w, path)

    def fields(self, r: dict[str, Any], w: dict[str, Any], path: str) -> list[str]:
        writer_fields = {f["name"]: f for f in w["fields"]}
        reasons: list[str] = []
        for index, field in enumerate(r["fields"]):
            where = f"{path}/fields/{index}"
            names = [field["name"], *field.get("aliases", [])]
            matches = [writer_fields[n] for n in dict.fromkeys(names) if n in writer_fields]
            if len(matches) > 1:
                detail = f"reader field {field['name']!r} matches several writer fields by alias"
                reasons.append(_reason("TYPE_MISMATCH", where, detail))
            elif matches:
                reasons += self.check(field["type"], matches[0]["type"], f"{where}/type")
            elif "default" not in field:
                detail = f"reader field {field['name']!r} has no default and the writer lacks it"
                reasons.append(_reason("READER_FIELD_MISSING_DEFAULT_VALUE", where, detail))
        return reasons


def _reason(kind: str, path: str, detail: str) -> str:
    return f"{kind} at {path or '/'}: {detail}"
