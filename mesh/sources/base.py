"""The source adapter contract.

An adapter turns a source system's change feed into :class:`ChangeEvent` objects. Its
lifecycle is ``start()`` once, ``poll(cursor)`` repeatedly, ``stop()`` once; the
:class:`~mesh.sources.runner.SourceRunner` drives it, publishes what it returns and only
then stores the cursor it returned, so a restarted adapter resumes exactly there.
A new source kind is a new module with a subclass, registered in ``mesh.sources.kinds``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mesh.domain import DomainConfig, EntitySpec, SourceSpec
from mesh.retry import RetryHook
from mesh.sources.events import ChangeEvent, DeadLetter
from mesh.sources.metrics import AdapterState
from mesh.sources.rereads import RereadRequest

log = logging.getLogger(__name__)

Cursor = dict[str, Any]
"""An adapter's resume point: JSON-serialisable, opaque to everything but the adapter."""


@dataclass
class PollResult:
    """What one poll produced, and the cursor to store once it is published."""

    cursor: Cursor
    events: list[ChangeEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    more: bool = False
    """More is waiting: poll again at once instead of after the poll interval."""
    state: AdapterState = AdapterState.FOLLOWING


@dataclass
class Reread:
    """What reading items again produced (see :meth:`SourceAdapter.reread`)."""

    events: list[ChangeEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


ChildrenLookup = Callable[[str, str], Awaitable[dict[str, list[str]]]]
"""``(entity type, id)`` → ids of the entities pointing at it, by child entity type, as the
catalog's reverse relation indexes know them (deleted parents included)."""


class SourceAdapter(ABC):
    """Base class of source adapters: one instance per configured source."""

    def __init__(self, spec: SourceSpec, domain: DomainConfig) -> None:
        self.spec = spec
        self.domain = domain
        self.entities: dict[str, EntitySpec] = {
            name: entity for name, entity in domain.entities.items() if spec.name in entity.sources
        }
        """The entity types this source feeds, by name."""
        self.should_stop: Callable[[], bool] = lambda: False
        """Set by the runner: retry loops give up once it returns True."""
        self.on_retry: RetryHook | None = None
        """Set by the runner: reports backoff to the metrics."""
        self.children: ChildrenLookup | None = None
        """Set by the supervisor: the catalog's children of an entity (see ChildrenLookup)."""

    async def start(self) -> None:  # noqa: B027 (optional hook)
        """Open connections and authenticate; called once before the first poll."""

    @abstractmethod
    async def poll(self, cursor: Cursor | None) -> PollResult:
        """Read the next changes after ``cursor`` (``None``: nothing read yet)."""

    async def reread(self, requests: list[RereadRequest]) -> Reread:
        """Read the items of ``requests`` again (a dead letter's replay) and say what they
        are now, versioned at each request's position. This kind cannot: it says so."""
        log.warning(
            "source %s (%s) cannot read items again; %d re-read requests dropped",
            self.spec.name, self.spec.kind, len(requests),
        )  # fmt: skip
        return Reread()

    async def heads(self) -> dict[str, int]:
        """Newest feed position per collection, for lag metrics (may be empty)."""
        return {}

    async def stop(self) -> None:  # noqa: B027 (optional hook)
        """Close connections; called once, also after a failed start."""
