"""What ``mesh bench saga`` works with: its orders, a measured phase of one path, a run, and
the names they share."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh_tooling.bench.load import LoadResult

SAGA_TYPE = "place_order"
SAGAS, CEILING = "sagas", "ceiling"
MAX_UNITS = 3
"""Units per line: 1 to this many."""
PLACED, BETWEEN, SEEN = "placeOrder → STARTED", "between steps", "COMPLETED → seen"
"""Parts of a saga's time besides its steps (see :func:`.phases.timeline`)."""


def say(message: str) -> None:
    print(f"  {message}", flush=True)


@dataclass(frozen=True)
class Order:
    """One order: a customer and ``(product, units)`` lines."""

    customer: int
    lines: tuple[tuple[int, int], ...]

    def as_input(self) -> dict[str, Any]:
        """``placeOrder``'s input, less the idempotency key."""
        return {
            "customer": str(self.customer),
            "lines": [{"product": str(p), "quantity": q} for p, q in self.lines],
        }


def make_orders(
    count: int, lines: int, customers: Sequence[int], products: Sequence[int], seed: int
) -> list[Order]:
    """``count`` orders of ``lines`` distinct products each, drawn with ``seed``."""
    rng = random.Random(seed)
    return [
        Order(
            rng.choice(customers),
            tuple((p, rng.randint(1, MAX_UNITS)) for p in rng.sample(list(products), lines)),
        )
        for _ in range(count)
    ]


@dataclass
class Phase:
    """One measured pass of one path over the orders."""

    path: str
    """:data:`SAGAS` or :data:`CEILING`."""
    round: int
    orders: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    """Sagas: final statuses from the transition events; ceiling: COMPLETED per order run."""
    statuses: Counter[str] = field(default_factory=Counter)
    """Sagas: the statuses GraphQL ``saga(id)`` answered afterwards."""
    errors: int = 0
    first_error: str | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)
    other_cpu_s: list[tuple[str, float]] = field(default_factory=list)
    """The other processes' CPU seconds in the phase by command, most first."""
    writes: Counter[str] = field(default_factory=Counter)
    """Directus writes of the sagas' user in the phase, ``"<collection> <action>"``."""
    requests: Counter[str] = field(default_factory=Counter)
    """Ceiling: the Directus requests sent, ``"<method> <collection>"``."""
    parts_ms: dict[str, list[float]] = field(default_factory=dict)
    """Where each order's time went (see :func:`.phases.timeline`), by part."""
    transitions_ms: list[float] = field(default_factory=list)
    """Sagas: each transition persisted and published between two steps."""

    @property
    def window(self) -> LoadResult:
        """The phase as a measured window of :mod:`~mesh_tooling.bench.load` (an order
        carried to its end is a correct answer): its count, rate and percentiles."""
        return LoadResult(self.seconds, self.latencies_ms)

    @property
    def finished(self) -> int:
        return self.window.requests

    @property
    def per_s(self) -> float:
        """Orders carried to their end per second."""
        return self.window.per_s

    @property
    def p50_ms(self) -> float:
        return self.window.p50_ms

    @property
    def p99_ms(self) -> float:
        return self.window.p99_ms

    def fail(self, error: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or error


@dataclass
class SagaRun:
    """What one run measured, and how."""

    sagas: int
    concurrency: int
    lines: int
    workers: int
    products: int
    phases: list[Phase]
    warmup: int
    setup_s: float
