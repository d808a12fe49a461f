"""What ``list`` and ``show`` print: one line per letter, a summary, a letter in full."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fastavro import schemaless_reader

from mesh.codec import RegistryClient, unpack
from mesh.deadletters.letters import Letter
from mesh.errors import CodecError, MeshError

MESSAGE_WIDTH = 100
HEX_LIMIT = 4096
"""Bytes of a binary value shown in hex; the rest is counted, not printed."""


def shorten(text: str, width: int = MESSAGE_WIDTH) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    line = re.sub(r"\s+", " ", text).strip()
    return line if len(line) <= width else line[: width - 1] + "…"


def list_line(letter: Letter) -> str:
    """One letter as ``list`` prints it."""
    return (
        f"{letter.id!s:>9}  {letter.time:%Y-%m-%d %H:%M:%S}  {letter.stage:<16}  "
        f"{letter.origin}  {letter.error_class}: {shorten(letter.error_message)}"
    )


def summary(by_stage: Counter[str], shown: int) -> str:
    """The closing line of ``list``: how many letters, by stage."""
    total = sum(by_stage.values())
    if not total:
        return "no dead letters"
    stages = ", ".join(f"{stage} {n}" for stage, n in sorted(by_stage.items()))
    noun = "letter" if total == 1 else "letters"
    more = f" (showing {shown}: --limit)" if shown < total else ""
    return f"{total} dead {noun}{more}: {stages}"


def letter_json(letter: Letter) -> dict[str, Any]:
    """One letter as ``list --json`` gives it."""
    return {
        "id": str(letter.id),
        "partition": letter.id.partition,
        "offset": letter.id.offset,
        "time": letter.time.isoformat(),
        "stage": letter.stage,
        "origin": letter.origin.as_json(),
        "error": {"class": letter.error_class, "message": letter.error_message},
    }


def list_json(letters: Iterable[Letter], by_stage: Counter[str]) -> str:
    """The document ``list --json`` prints."""
    return json.dumps(
        {
            "letters": [letter_json(letter) for letter in letters],
            "count": sum(by_stage.values()),
            "by_stage": dict(sorted(by_stage.items())),
        },
        indent=2,
    )


def raw(data: bytes | None) -> str:
    """Bytes as text when they are printable UTF-8, else as hex."""
    if data is None:
        return "(null)"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\n\t\r" for c in text):
        return text
    shown = data[:HEX_LIMIT].hex(" ", 1)
    more = f" … ({len(data) - HEX_LIMIT} more bytes)" if len(data) > HEX_LIMIT else ""
    return f"hex {shown}{more} ({len(data)} bytes)"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


AvroDecoder = Callable[[bytes, str | None], tuple[str, Any]]
"""A Confluent-framed value (and the subject it was written under, when known) → (what
decoded it, the decoded value); raises MeshError."""


def registry_decoder(registry: RegistryClient) -> AvroDecoder:
    """Decodes with the writer schema the value names, fetched from ``registry``."""

    def decode(value: bytes, subject: str | None) -> tuple[str, Any]:
        schema_id, body = unpack(value)
        writer = registry.writer_schema(schema_id)
        try:
            decoded = schemaless_reader(io.BytesIO(body), writer, None)
        except Exception as exc:  # fastavro raises many types on corrupt bodies
            raise CodecError(
                f"the body does not decode with schema {schema_id}: {type(exc).__name__}: {exc}"
            ) from None
        # One schema can be registered under many subjects: name the record's topic's.
        found = registry.subject_version(schema_id, subject=subject)
        named = f", {found[0]} version {found[1]}" if found else ""
        return f"Avro, schema id {schema_id}{named}", decoded

    return decode


def show_value(
    value: bytes | None, decode: AvroDecoder | None, subject: str | None = None
) -> list[str]:
    """The value's lines: decoded Avro when it is Confluent-framed and decodes, else raw."""
    if value is not None and len(value) > 5 and value[0] == 0 and decode is not None:
        try:
            what, decoded = decode(value, subject)
        except MeshError as exc:
            return [f"value      (not decoded: {exc})", f"  {raw(value)}"]
        body = json.dumps(decoded, indent=2, default=_json_default, ensure_ascii=False)
        return [f"value      ({what})", *(f"  {line}" for line in body.splitlines())]
    return [f"value      {raw(value)}"]


def _indented(text: str) -> str:
    """``text`` with its continuation lines indented under the first."""
    return "\n             ".join(text.rstrip().splitlines()) or ""


def show_lines(letter: Letter, topic: str, replay: str, decode: AvroDecoder | None) -> list[str]:
    """Everything about one letter: where, why, every header, the key and the value."""
    lines = [
        f"letter     {letter.id} of {topic}",
        f"written    {letter.time:%Y-%m-%d %H:%M:%S.%f}"[:-3] + " UTC",
        f"stage      {letter.stage}",
        f"error      {letter.error_class}: {_indented(letter.error_message)}",
        f"origin     {letter.origin}",
        f"replay     {replay}",
        "headers",
        *(f"  {name}: {_indented(raw(value))}" for name, value in letter.headers),
        f"key        {raw(letter.key)}",
    ]
    topic_of_record = letter.origin.topic
    subject = None if topic_of_record is None else f"{topic_of_record}-value"
    return lines + show_value(letter.value, decode, subject)
