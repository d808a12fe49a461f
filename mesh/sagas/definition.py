"""How a saga is written: an ordered list of steps, each an action and its compensation.

    PLACE_ORDER = SagaDefinition(
        name="place_order",
        validate=parse_order,               # raises SagaInputError; returns the input kept
        steps=(
            Step("check_customer", check_customer),          # retried, never compensated
            Step("reserve_stock", reserve, compensate=release),
            ...
        ),
    )

An action gets a :class:`StepContext` and returns a JSON-able dict (kept in the saga's
``data`` under the step's name, for the next steps); it must be idempotent by its
``ctx.idempotency_key`` (saga id + step): after a crash the step runs again. A
compensation must undo whatever part of its action happened, and do nothing when none
did. Raising :class:`~mesh.errors.StepRefusedError` compensates at once; a retriable
:class:`~mesh.errors.MeshError` (or a timeout) is retried with backoff until the step's
attempts or the saga's deadline run out; anything else compensates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mesh.sagas.state import SagaState

__all__ = ["SagaDefinition", "Step", "StepContext"]


@dataclass
class StepContext:
    """What a step's action or compensation is given."""

    saga: SagaState
    step: str
    services: Any
    """The saga type's dependencies (e.g. Directus writers, catalog reads), made by its
    registration."""

    @property
    def tenant(self) -> str:
        return self.saga.tenant

    @property
    def input(self) -> dict[str, Any]:
        return self.saga.input

    @property
    def data(self) -> dict[str, Any]:
        """What the finished steps returned, by step name."""
        return self.saga.data

    @property
    def idempotency_key(self) -> str:
        """Unique per saga and step: what the action's writes are keyed by."""
        return f"{self.saga.id}:{self.step}"


Action = Callable[[StepContext], Awaitable[dict[str, Any] | None]]
Compensation = Callable[[StepContext], Awaitable[None]]


@dataclass(frozen=True)
class Step:
    """One step: an action and, unless it only reads, its compensation."""

    name: str
    action: Action
    compensate: Compensation | None = None
    timeout_s: float = 10.0
    """One attempt of the action (or the compensation) at most this long."""
    max_attempts: int | None = None
    """Attempts of the action on retriable errors; ``None``: until the saga's deadline."""


@dataclass(frozen=True)
class SagaDefinition:
    """A saga type: its steps and how it is retried."""

    name: str
    steps: tuple[Step, ...]
    validate: Callable[[Any], dict[str, Any]]
    """Checks and normalises a request's input (:class:`~mesh.errors.SagaInputError`)."""
    services: Callable[[], Any] = lambda: None
    """Makes the steps' dependencies once per worker (``ctx.services``)."""
    preflight: Callable[[Any, str], None] = lambda services, tenant: None
    """Called with the services and the tenant before a saga starts: raises
    :class:`~mesh.errors.SagaError` when it could not run (e.g. no write token), so the
    request fails instead of a saga that can only compensate."""
    deadline_s: float = 60.0
    """After this long a saga still going forward compensates."""
    compensation_attempts: int = 30
    """Attempts of one compensation before the saga ends ``FAILED_COMPENSATION``."""
    backoff_base_s: float = 0.2
    backoff_max_s: float = 5.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failed attempt (from 1)."""
        return float(min(self.backoff_max_s, self.backoff_base_s * 2 ** min(attempt - 1, 16)))
