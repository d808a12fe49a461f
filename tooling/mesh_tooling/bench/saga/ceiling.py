"""The ceiling of ``mesh bench saga``: the place-order saga's own Directus steps run in the
bench's process, without the engine."""

from __future__ import annotations

import time
import uuid
from typing import cast

from prometheus_client import CollectorRegistry

from mesh.catalog.reader import CatalogReader
from mesh.errors import StackError
from mesh.sagas.definition import StepContext
from mesh.sagas.faults import FaultPoints
from mesh.sagas.metrics import SagaMetrics
from mesh.sagas.place_order import OrderServices, place_order, validate_order
from mesh.sagas.state import SagaState
from mesh.sagas.stock import StockKeeper
from mesh_tooling.bench.saga.counting import CountingDirectus
from mesh_tooling.bench.saga.model import SAGA_TYPE, Order

CATALOG_STEP = "check_order"
"""The one step that reads the catalog, not Directus: the ceiling leaves it out."""


class DirectSagas:
    """The place-order saga's Directus steps run in this process, without the engine: the
    same step functions with a :class:`StockKeeper` of its own (locks, first-touch settle)
    and the sagas' own Directus client, as a worker makes it."""

    def __init__(self, client: CountingDirectus, tenant: str, prices: dict[str, str]) -> None:
        self.client = client
        self.tenant = tenant
        self.prices = prices
        self.stock = StockKeeper(
            lambda _tenant: client, SagaMetrics(CollectorRegistry()), FaultPoints(None, None)
        )
        services = OrderServices(
            reader=cast(CatalogReader, None),  # only the catalog step reads it: left out
            writer=lambda _tenant: client,
            stock=self.stock.handle,  # what the product's owner does (Sagas.stock_local)
        )
        self.services = services
        definition = place_order(lambda: services, deadline_s=60.0)
        self.steps = [s for s in definition.steps if s.name != CATALOG_STEP]
        if len(self.steps) != len(definition.steps) - 1:
            raise StackError(f"the place-order saga has no step {CATALOG_STEP!r} any more")

    async def place(self, order: Order) -> dict[str, float]:
        """Run the order's Directus steps one after the other, as the engine would; the
        milliseconds each took."""
        state = SagaState(
            str(uuid.uuid4()), SAGA_TYPE, self.tenant, validate_order(order.as_input()),
            deadline_at=time.time() + 60,
        )  # fmt: skip
        products = [line["product"] for line in state.input["lines"]]
        state.data[CATALOG_STEP] = {"prices": {p: self.prices[p] for p in products}}
        took = {}
        for step in self.steps:
            started = time.perf_counter()
            result = await step.action(StepContext(state, step.name, self.services))
            took[step.name] = (time.perf_counter() - started) * 1000
            state.data[step.name] = result or {}
        return took
