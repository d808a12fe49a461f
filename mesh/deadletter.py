"""The dead-letter topic: input that could not be processed, with headers to act on it.

Nothing is dropped silently: whatever cannot become an event (or be applied) is written
here with headers naming where it came from, the stage that failed and the error.
"""

from __future__ import annotations

from collections.abc import Mapping


def dead_letter_topic(app_id: str) -> str:
    """Name of the dead-letter topic of an app."""
    return f"{app_id}.dead_letters"


def dead_letter_headers(
    *, stage: str, error: BaseException, context: Mapping[str, object]
) -> list[tuple[str, bytes]]:
    """Kafka headers for a dead letter: ``stage``, the error, and ``context`` (strings)."""
    headers = [
        ("dictamesh.stage", stage.encode()),
        ("dictamesh.error.class", type(error).__name__.encode()),
        ("dictamesh.error.message", str(error)[:4000].encode()),
    ]
    headers.extend((f"dictamesh.{name}", str(value).encode()) for name, value in context.items())
    return headers
