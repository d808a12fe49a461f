"""Drives one saga to its end: steps forward, then (on failure) compensations backward.

Each transition is persisted (the changelog acknowledged it) before the step it names
runs, and published after: a worker killed anywhere leaves a state from which the next
owner resumes, re-running at most the step that was in flight (steps are idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mesh.errors import MeshError, StepRefusedError
from mesh.sagas.definition import SagaDefinition, Step, StepContext
from mesh.sagas.events import SagaEvents
from mesh.sagas.faults import FaultPoints
from mesh.sagas.metrics import SagaMetrics
from mesh.sagas.state import Event, SagaState, SagaStatus
from mesh.sagas.store import SagaStore

__all__ = ["SagaEngine"]

log = logging.getLogger(__name__)

DeadLetter = Callable[[SagaState], Awaitable[None]]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:1000]


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or (isinstance(exc, MeshError) and exc.retriable)


class SagaEngine:
    """Runs sagas of the registered types (one :meth:`drive` per saga at a time)."""

    def __init__(
        self,
        store: SagaStore,
        events: SagaEvents,
        metrics: SagaMetrics,
        definitions: dict[str, SagaDefinition],
        services: dict[str, Any],
        faults: FaultPoints,
        dead_letter: DeadLetter,
    ) -> None:
        self.store = store
        self.events = events
        self.metrics = metrics
        self.definitions = definitions
        self.services = services
        self.faults = faults
        self.dead_letter = dead_letter

    async def persist(
        self,
        state: SagaState,
        event: Event,
        step: str | None = None,
        error: str | None = None,
        *,
        publish: bool = True,
    ) -> None:
        """Record a transition, persist it, then publish it (unless ``publish`` is off:
        :meth:`drive` publishes a saga's last transition when it begins)."""
        state.record(event, step, error)
        await self.store.put(state)
        self.faults.reached(f"{event.value}:{step or ''}".rstrip(":"))
        if publish:
            await self.events.publish(state)

    async def drive(self, state: SagaState) -> SagaState:
        """Run ``state`` to a final status (or until cancelled: the state stays resumable)."""
        definition = self.definitions[state.saga_type]
        if state.history:  # new or resumed: its last transition may not be published yet
            await self.events.publish(state)
        self.metrics.running.inc()
        try:
            while not state.done:
                if state.status is SagaStatus.RUNNING:
                    await self._forward(definition, state)
                else:
                    await self._backward(definition, state)
        finally:
            self.metrics.running.dec()
        return state

    def _context(self, state: SagaState, step: Step) -> StepContext:
        return StepContext(state, step.name, self.services.get(state.saga_type))

    async def _forward(self, definition: SagaDefinition, state: SagaState) -> None:
        if state.step >= len(definition.steps):
            state.status = SagaStatus.COMPLETED
            await self.persist(state, Event.COMPLETED)
            self._finished(state, "completed")
            return
        step = definition.steps[state.step]
        remaining = state.deadline_at - time.time()
        if remaining <= 0:
            await self._compensate(state, f"the saga's deadline passed during {step.name}")
            return
        state.attempt += 1
        await self.persist(state, Event.STEP_STARTED, step.name)
        try:
            result = await asyncio.wait_for(
                step.action(self._context(state, step)), timeout=min(step.timeout_s, remaining)
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(definition, state, step, exc)
            return
        state.data[step.name] = result or {}
        state.step += 1
        state.attempt = 0
        await self.persist(state, Event.STEP_SUCCEEDED, step.name)

    async def _failed(
        self, definition: SagaDefinition, state: SagaState, step: Step, exc: Exception
    ) -> None:
        error = _describe(exc)
        self.metrics.step_failures.labels(state.saga_type, step.name, "action").inc()
        if not isinstance(exc, MeshError | TimeoutError):
            log.exception("saga %s: step %s raised", state.id, step.name)
        await self.persist(state, Event.STEP_FAILED, step.name, error)
        why = f"{step.name}: {error}"
        if _retriable(exc) and not isinstance(exc, StepRefusedError):
            wait = definition.backoff(state.attempt)
            if step.max_attempts is not None and state.attempt >= step.max_attempts:
                why = f"{step.name}: gave up after {state.attempt} attempts: {error}"
            elif time.time() + wait >= state.deadline_at:
                why = f"{step.name}: the saga's deadline passed while retrying: {error}"
            else:
                await asyncio.sleep(wait)
                return
        await self._compensate(state, why)

    async def _compensate(self, state: SagaState, why: str) -> None:
        # From the failed step itself down: it may have had part of its effect.
        state.status = SagaStatus.COMPENSATING
        state.error = why
        state.attempt = 0
        await self.persist(state, Event.COMPENSATING, error=why)

    async def _backward(self, definition: SagaDefinition, state: SagaState) -> None:
        if state.step < 0:
            state.status = SagaStatus.COMPENSATED
            await self.persist(state, Event.COMPENSATED, error=state.error)
            self._finished(state, "compensated")
            return
        step = definition.steps[min(state.step, len(definition.steps) - 1)]
        if step.compensate is None:
            state.step -= 1  # nothing to undo: no transition needed to skip it again
            return
        state.attempt += 1
        try:
            await asyncio.wait_for(step.compensate(self._context(state, step)), step.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = _describe(exc)
            self.metrics.step_failures.labels(state.saga_type, step.name, "compensation").inc()
            if not isinstance(exc, MeshError | TimeoutError):
                log.exception("saga %s: compensation of %s raised", state.id, step.name)
            await self.persist(state, Event.COMPENSATION_FAILED, step.name, error)
            if state.attempt >= definition.compensation_attempts:
                state.status = SagaStatus.FAILED_COMPENSATION
                state.error = f"compensating {step.name}: {error} (after {state.attempt} attempts)"
                await self.persist(state, Event.FAILED_COMPENSATION, step.name, state.error)
                self._finished(state, "failed_compensation")
                await self.dead_letter(state)
                log.error("saga %s ended FAILED_COMPENSATION: %s", state.id, state.error)
                return
            await asyncio.sleep(definition.backoff(state.attempt))
            return
        state.step -= 1
        state.attempt = 0
        await self.persist(state, Event.STEP_COMPENSATED, step.name)

    def _finished(self, state: SagaState, outcome: str) -> None:
        self.metrics.finished.labels(state.saga_type, outcome).inc()
        self.metrics.duration.labels(state.saga_type, outcome).observe(
            max(0.0, state.updated_at - state.created_at)
        )
