"""The dead-letter topic: input that could not be processed, with headers to act on it.

Nothing is dropped silently: whatever cannot become an event (or be applied) is written
here with headers naming where it came from, the stage that failed and the error. A
letter of a Kafka record keeps that record's own headers too (before the dead-letter
ones), so a replay (``mesh deadletters replay``) can send it back as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

HEADER_PREFIX = "dictamesh."
STAGE_HEADER = "dictamesh.stage"
ERROR_CLASS_HEADER = "dictamesh.error.class"
ERROR_MESSAGE_HEADER = "dictamesh.error.message"
ORIGIN_FIELDS = ("topic", "partition", "offset", "source", "collection", "item", "position")
"""The context names dead-letter writers use: a record's origin, or a source item's."""
DEAD_LETTER_HEADERS = frozenset(
    {STAGE_HEADER, ERROR_CLASS_HEADER, ERROR_MESSAGE_HEADER}
    | {f"{HEADER_PREFIX}{name}" for name in ORIGIN_FIELDS}
)
"""Every header name :func:`dead_letter_headers` writes with the context above."""


def dead_letter_topic(app_id: str) -> str:
    """Name of the dead-letter topic of an app."""
    return f"{app_id}.dead_letters"


Headers = Iterable[tuple[str, bytes]] | Mapping[str, bytes]
"""A record's headers: Kafka's ``[(name, value)]``, or a mapping as some clients give them."""


def original_headers(headers: Headers | None) -> list[tuple[str, bytes]]:
    """``headers`` without the dead-letter ones: what the record carried before it failed."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
    return [(name, value) for name, value in pairs if name not in DEAD_LETTER_HEADERS]


def dead_letter_headers(
    *,
    stage: str,
    error: BaseException,
    context: Mapping[str, object],
    keep: Headers | None = None,
) -> list[tuple[str, bytes]]:
    """Kafka headers for a dead letter: ``stage``, the error, and ``context`` (strings),
    after ``keep`` (the failed record's own headers, minus any dead-letter ones)."""
    headers = original_headers(keep)
    headers += [
        (STAGE_HEADER, stage.encode()),
        (ERROR_CLASS_HEADER, type(error).__name__.encode()),
        (ERROR_MESSAGE_HEADER, str(error)[:4000].encode()),
    ]
    headers.extend(
        (f"{HEADER_PREFIX}{name}", str(value).encode()) for name, value in context.items()
    )
    return headers
