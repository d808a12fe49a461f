"""A dead letter as read back from the topic: where it sits, where it came from, why."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mesh.deadletter import (
    ERROR_CLASS_HEADER,
    ERROR_MESSAGE_HEADER,
    HEADER_PREFIX,
    STAGE_HEADER,
    original_headers,
)
from mesh.deadletters.errors import DeadLetterToolError

_REF = re.compile(r"^(?:(\d+):)?(\d+)$")


@dataclass(frozen=True, order=True)
class LetterId:
    """Where a letter sits in the dead-letter topic: ``partition:offset``."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True)
class LetterRef:
    """A letter as the operator names it: ``OFFSET`` or ``PARTITION:OFFSET``."""

    partition: int | None
    offset: int

    @classmethod
    def parse(cls, text: str, partition: int | None = None) -> LetterRef:
        """``text`` (``12`` or ``3:12``); ``partition`` applies when ``text`` names none."""
        found = _REF.match(text.strip())
        if found is None:
            raise DeadLetterToolError(
                f"'{text}' is not a dead-letter offset: give OFFSET or PARTITION:OFFSET "
                "as `mesh deadletters list` prints them (e.g. 12 or 3:12)"
            )
        named = found.group(1)
        return cls(int(named) if named is not None else partition, int(found.group(2)))

    def __str__(self) -> str:
        return str(self.offset) if self.partition is None else f"{self.partition}:{self.offset}"


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Origin:
    """Where a letter came from: a Kafka record (catalog, mirror) or a source's item
    (change capture, before any topic)."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    source: str | None = None
    collection: str | None = None
    item: str | None = None
    position: int | None = None

    @property
    def is_record(self) -> bool:
        """A record of a topic (it can be sent back there)."""
        return self.topic is not None and self.partition is not None

    @property
    def is_item(self) -> bool:
        """An item of a source (it can be read again from there)."""
        return None not in (self.source, self.collection, self.item)

    def __str__(self) -> str:
        if self.is_record:
            return f"{self.topic}[{self.partition}]@{self.offset}"
        if self.is_item:
            at = f"@{self.position}" if self.position is not None else ""
            return f"{self.source}/{self.collection}/{self.item}{at}"
        return "(origin unknown)"

    def as_json(self) -> dict[str, Any]:
        """The origin's fields that are set."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Letter:
    """One record of the dead-letter topic."""

    id: LetterId
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    """As read (Kafka allows a header without a value: ``None``)."""

    @classmethod
    def from_record(cls, record: Any) -> Letter:
        """The letter of a consumed Kafka record."""
        return cls(
            LetterId(record.partition, record.offset),
            int(record.timestamp),
            record.key,
            record.value,
            tuple(record.headers or ()),
        )

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` as text (``None`` when absent)."""
        found = [value for key, value in self.headers if key == name and value is not None]
        return found[-1].decode("utf-8", "replace") if found else None

    @property
    def stage(self) -> str:
        """The stage that failed (``?`` when the letter does not say)."""
        return self.header(STAGE_HEADER) or "?"

    @property
    def error_class(self) -> str:
        """The exception class that stopped it."""
        return self.header(ERROR_CLASS_HEADER) or "?"

    @property
    def error_message(self) -> str:
        """The exception's message."""
        return self.header(ERROR_MESSAGE_HEADER) or ""

    @property
    def time(self) -> datetime:
        """When it was written to the dead-letter topic."""
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def origin(self) -> Origin:
        """Where it came from, per its headers."""

        def get(name: str) -> str | None:
            return self.header(f"{HEADER_PREFIX}{name}")

        return Origin(
            topic=get("topic"),
            partition=_int(get("partition")),
            offset=_int(get("offset")),
            source=get("source"),
            collection=get("collection"),
            item=get("item"),
            position=_int(get("position")),
        )

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The headers the failed record carried (its dead-letter headers removed)."""
        return original_headers(self.headers)
