"""Re-read requests: asking a source to read one item again (a dead letter's replay).

A change-capture dead letter has no record to send back: the item never became an event.
Replaying it (``mesh deadletters replay``) writes a request to the compacted topic
``<app_id>.source-rereads``, keyed ``<source>/<collection>/<item>`` (a newer request for the
same item replaces an older one). The worker polling the source picks it up between two
polls, reads the item's current state, publishes it with the letter's position as its
version, and then deletes the request (a tombstone). Requests live in Kafka until done, so
they survive restarts and follow the source when it moves to another worker; one carried
out twice (a worker stopped between publishing and the tombstone) is harmless, since the
catalog and the mirror keep only newer versions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from mesh.errors import CodecError

REREAD_TOPIC_CONFIG = {"cleanup.policy": "compact"}


def reread_topic(app_id: str) -> str:
    """The topic of an app's re-read requests."""
    return f"{app_id}.source-rereads"


@dataclass(frozen=True)
class RereadRequest:
    """Read ``item`` of ``collection`` again from ``source``."""

    source: str
    collection: str
    item: str
    position: int | None = None
    """The dead letter's source position: the version the item is published at."""
    letter: str | None = None
    """The dead letter it replays (``<topic>:<partition>:<offset>``), for the logs."""

    @property
    def key(self) -> bytes:
        """The request's Kafka key: one request per item."""
        return f"{self.source}/{self.collection}/{self.item}".encode()

    def dumps(self) -> bytes:
        """The request's Kafka value."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def loads(cls, value: bytes) -> RereadRequest:
        """The request in a Kafka value (:class:`~mesh.errors.CodecError` when not one)."""
        try:
            data: Any = json.loads(value)
            position = data.get("position")
            return cls(
                source=str(data["source"]),
                collection=str(data["collection"]),
                item=str(data["item"]),
                position=int(position) if position is not None else None,
                letter=data.get("letter"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CodecError(f"not a re-read request: {value[:200]!r} ({exc})") from None
