"""The saga engine's rules, on in-memory parts: what runs, in which order, what is
persisted before it, and how a saga ends, for any mix of step outcomes (hypothesis)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from mesh.errors import SagaInputError, SourceError, StepRefusedError
from mesh.sagas.definition import SagaDefinition, Step, StepContext
from mesh.sagas.engine import SagaEngine
from mesh.sagas.faults import FaultPoints
from mesh.sagas.metrics import SagaMetrics
from mesh.sagas.place_order import MAX_LINES, validate_order
from mesh.sagas.state import Event, SagaState, SagaStatus

Outcome = str  # "ok", "retry" (fails retriably once, then ok), "refuse", "crash"


class Memory:
    """The store and the event stream: every persisted state, in order."""

    def __init__(self) -> None:
        self.persisted: list[tuple[str, str | None]] = []
        self.published: list[int] = []
        self.dead: list[str] = []

    async def put(self, state: SagaState) -> None:
        last = state.history[-1]
        self.persisted.append((last.event.value, last.step))

    async def publish(self, state: SagaState, sequence: int | None = None) -> None:
        self.published.append(len(state.history) - 1 if sequence is None else sequence)


def _engine(
    outcomes: list[Outcome], undo_fails: int, log: list[str], memory: Memory
) -> tuple[SagaEngine, SagaDefinition]:
    tries: dict[str, int] = {}

    def action(n: int) -> Any:
        async def run(ctx: StepContext) -> dict[str, Any]:
            # What ran is persisted first: the STEP_STARTED of this very attempt.
            assert memory.persisted[-1] == ("STEP_STARTED", ctx.step)
            tries[ctx.step] = tries.get(ctx.step, 0) + 1
            log.append(f"do {ctx.step}")
            outcome = outcomes[n]
            if outcome == "refuse":
                raise StepRefusedError("no")
            if outcome == "retry" and tries[ctx.step] == 1:
                raise SourceError("away", retriable=True)
            if outcome == "crash":
                raise KeyError("bug")
            return {"n": n}

        return run

    def undo(n: int) -> Any:
        async def run(ctx: StepContext) -> None:
            log.append(f"undo {ctx.step}")
            if undo_fails and n == 0:
                raise SourceError("still away", retriable=True)

        return run

    steps = tuple(
        Step(f"s{n}", action(n), compensate=undo(n) if n % 2 == 0 else None)
        for n in range(len(outcomes))
    )
    definition = SagaDefinition(
        name="test", steps=steps, validate=dict, backoff_base_s=0.001, backoff_max_s=0.001,
        compensation_attempts=3,
    )  # fmt: skip

    async def dead_letter(state: SagaState) -> None:
        memory.dead.append(state.id)

    engine = SagaEngine(
        cast(Any, memory), cast(Any, memory), SagaMetrics(CollectorRegistry()),
        {"test": definition}, {}, FaultPoints(None, None), dead_letter,
    )  # fmt: skip
    return engine, definition


@settings(max_examples=200, deadline=None)
@given(
    outcomes=st.lists(st.sampled_from(["ok", "ok", "retry", "refuse", "crash"]), max_size=6),
    undo_fails=st.booleans(),
)
def test_a_saga_ends_completed_or_undoes_what_it_did_in_reverse(
    outcomes: list[Outcome], undo_fails: bool
) -> None:
    log: list[str] = []
    memory = Memory()
    engine, definition = _engine(outcomes, undo_fails, log, memory)
    state = SagaState("id", "test", "default", {}, time.time() + 60)
    asyncio.run(engine.drive(state))

    failing = next((n for n, o in enumerate(outcomes) if o in ("refuse", "crash")), None)
    if failing is None:
        assert state.status is SagaStatus.COMPLETED
        assert [line for line in log if line.startswith("undo")] == []
        assert state.data == {f"s{n}": {"n": n} for n in range(len(outcomes))}
        assert memory.persisted[-1] == ("COMPLETED", None)
        return
    # Forward up to the failing step (a retriable failure is tried again), then every
    # compensation from the failing step down, skipping steps without one.
    undone = [f"undo s{n}" for n in range(failing, -1, -1) if n % 2 == 0]
    done = [line for line in log if line.startswith("do")]
    assert done[-1] == f"do s{failing}"
    undos = [line for line in log if line.startswith("undo")]
    if undo_fails and undone and undone[-1] == "undo s0":
        assert state.status is SagaStatus.FAILED_COMPENSATION
        assert undos == undone + ["undo s0"] * (definition.compensation_attempts - 1)
        assert memory.dead == ["id"]
        assert memory.persisted[-1] == ("FAILED_COMPENSATION", "s0")
    else:
        assert state.status is SagaStatus.COMPENSATED
        assert undos == undone
        assert memory.dead == []
        assert memory.persisted[-1] == ("COMPENSATED", None)
    assert ("COMPENSATING", None) in memory.persisted
    # Every transition was published once, in order, after it was persisted.
    assert memory.published == list(range(len(state.history)))


def test_a_saga_past_its_deadline_compensates_instead_of_retrying() -> None:
    log: list[str] = []
    memory = Memory()
    engine, _ = _engine(["ok", "ok"], False, log, memory)
    state = SagaState("id", "test", "default", {}, time.time() - 1)
    asyncio.run(engine.drive(state))
    assert state.status is SagaStatus.COMPENSATED
    assert state.error is not None
    assert "deadline" in state.error
    assert log == ["undo s0"]  # nothing ran; s0's compensation finds nothing to undo


def test_a_state_survives_its_json() -> None:
    state = SagaState("id", "test", "default", {"a": [1]}, 12.5)
    state.record(Event.STARTED)
    state.record(Event.STEP_FAILED, "s0", "away")
    again = SagaState.loads(state.dumps())
    assert again == state


@given(
    lines=st.lists(
        st.fixed_dictionaries({"product": st.integers(1, 90), "quantity": st.integers(1, 50)}),
        min_size=1, max_size=120,
    )
)  # fmt: skip
def test_an_order_is_normalised_or_refused_with_the_reason(lines: list[dict[str, int]]) -> None:
    merged: dict[str, int] = {}
    for line in lines:
        merged[str(line["product"])] = merged.get(str(line["product"]), 0) + line["quantity"]
    if len(merged) > MAX_LINES:
        with pytest.raises(SagaInputError, match=f"at most {MAX_LINES} lines"):
            validate_order({"customer": 7, "lines": lines})
        return
    order = validate_order({"customer": 7, "lines": lines})
    assert order["customer"] == "7"
    assert {line["product"]: line["quantity"] for line in order["lines"]} == merged
    assert [int(line["product"]) for line in order["lines"]] == sorted(map(int, merged))
