"""A saga's state: what it was asked, how far it got, and every transition on the way."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["TERMINAL", "Event", "SagaState", "SagaStatus", "Transition"]


class SagaStatus(StrEnum):
    """Where a saga is. The last three are final."""

    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED_COMPENSATION = "FAILED_COMPENSATION"


TERMINAL = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED_COMPENSATION})


class Event(StrEnum):
    """What a transition recorded."""

    STARTED = "STARTED"
    STEP_STARTED = "STEP_STARTED"
    STEP_SUCCEEDED = "STEP_SUCCEEDED"
    STEP_FAILED = "STEP_FAILED"
    """One attempt failed; it is retried, or the saga compensates."""
    COMPENSATING = "COMPENSATING"
    STEP_COMPENSATED = "STEP_COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"
    """One attempt of a compensation failed; it is retried until it gives up."""
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED_COMPENSATION = "FAILED_COMPENSATION"


@dataclass
class Transition:
    """One persisted change of a saga."""

    at: float
    """Unix seconds."""
    event: Event
    step: str | None = None
    attempt: int = 0
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "event": self.event.value,
            "step": self.step,
            "attempt": self.attempt,
            "error": self.error,
        }


@dataclass
class SagaState:
    """One saga (JSON in the saga table)."""

    id: str
    saga_type: str
    tenant: str
    input: dict[str, Any]
    deadline_at: float
    """Unix seconds after which a running saga stops going forward and compensates."""
    status: SagaStatus = SagaStatus.RUNNING
    step: int = 0
    """Going forward: the step being run (every one before it succeeded). Compensating:
    the step being compensated (going down to 0)."""
    attempt: int = 0
    """Attempts made so far of the step (or compensation) at ``step``."""
    data: dict[str, Any] = field(default_factory=dict)
    """What each finished step returned, by step name (the next steps read it)."""
    error: str | None = None
    """Why the saga compensates (or failed to)."""
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    history: list[Transition] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def record(self, event: Event, step: str | None = None, error: str | None = None) -> Transition:
        """Append a transition (persist the state before acting on it)."""
        now = time.time()
        transition = Transition(now, event, step, self.attempt, error)
        self.history.append(transition)
        self.updated_at = now
        return transition

    def dumps(self) -> bytes:
        # The enums are strings: their JSON is their value.
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes) -> SagaState:
        body = json.loads(raw)
        body["status"] = SagaStatus(body["status"])
        body["history"] = [
            Transition(h["at"], Event(h["event"]), h["step"], h["attempt"], h["error"])
            for h in body["history"]
        ]
        return cls(**body)

    def as_json(self) -> dict[str, Any]:
        """What the APIs show (the input included: it is the caller's own)."""
        return {
            "id": self.id,
            "type": self.saga_type,
            "tenant": self.tenant,
            "status": self.status.value,
            "step": self.step,
            "error": self.error,
            "input": self.input,
            "result": self.data,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "deadlineAt": self.deadline_at,
            "history": [t.as_json() for t in self.history],
        }
