"""Stock reservations in Directus, one product at a time.

Directus 10.10 has no atomic compare-and-set (an update by query re-checks nothing), so
every reservation of a product is made by the worker that owns the product's partition,
one after another (a lock per product): a single writer. Each reservation is a row of the
``reservations`` collection whose ``saga_line`` (saga id + line) is unique, so Directus
refuses a retried reservation's second row (``RECORD_NOT_UNIQUE``: the retry takes the
first instead), and whose ``status`` and ``stock_expected`` (the stock once the pending
change is applied) say how far it got:

- reserve: create the row ``reserving`` with ``stock_expected = stock - quantity``, lower the
  product's stock, mark the row ``held``;
- release: mark the row ``releasing`` with ``stock_expected = stock + quantity``, raise the
  stock, mark it ``released``.

A worker killed between two of these leaves a ``reserving``/``releasing`` row. Before it
touches a product, the (next) owner settles such rows: nothing else changed the product's
stock since (single writer), so ``stock == stock_expected`` means the change was applied,
anything else that it was not. Edits people make in the Directus UI (absolute values) are
outside this guarantee: an oversell they cause is detected (stock below zero after a
reservation: logged, ``dictamesh_saga_oversold_total``), not prevented.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from mesh.errors import SagaInputError, SourceError
from mesh.sagas.faults import FaultPoints
from mesh.sagas.metrics import SagaMetrics
from mesh.sources.directus.client import DirectusClient

__all__ = ["RESERVATIONS", "StockKeeper"]

log = logging.getLogger(__name__)

RESERVATIONS = "reservations"
PRODUCTS = "products"


class StockKeeper:
    """Makes and releases reservations of the products this worker owns."""

    def __init__(
        self, writer: Callable[[str], DirectusClient], metrics: SagaMetrics, faults: FaultPoints
    ) -> None:
        self.writer = writer
        self.metrics = metrics
        self.faults = faults
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._settled: set[tuple[str, str]] = set()

    def forget(self) -> None:
        """Partitions moved: products must be settled again before they are touched."""
        self._settled.clear()

    def _lock(self, tenant: str, product: str) -> asyncio.Lock:
        return self._locks.setdefault((tenant, product), asyncio.Lock())

    async def handle(self, tenant: str, product: str, request: dict[str, Any]) -> dict[str, Any]:
        """A stock request of a saga step (``{"op": "reserve", "saga", "saga_line",
        "quantity"}`` or ``{"op": "release", "saga_line"}``) for ``product``."""
        if request.get("op") == "reserve":
            return await self.reserve(
                tenant,
                str(request["saga_line"]),
                str(request["saga"]),
                product,
                int(request["quantity"]),
            )
        if request.get("op") == "release":
            return await self.release(tenant, str(request["saga_line"]), product)
        raise SagaInputError(f"unknown stock operation {request.get('op')!r}")

    async def reserve(
        self, tenant: str, saga_line: str, saga: str, product: str, quantity: int
    ) -> dict[str, Any]:
        """Reserve ``quantity`` of ``product`` for ``saga_line``; ``{"outcome": "held"}``,
        ``"insufficient"`` (with ``stock``), ``"unknown_product"`` or ``"released"``."""
        async with self._lock(tenant, product):
            directus = self.writer(tenant)
            await self._settle(directus, tenant, product)
            stock = await self._stock(directus, product)
            row: dict[str, Any] | None
            if stock is not None and stock >= quantity:
                row = await self._create(
                    directus,
                    {
                        "saga_line": saga_line,
                        "saga": saga,
                        "product": int(product),
                        "quantity": quantity,
                        "status": "reserving",
                        "stock_expected": stock - quantity,
                    },
                )
            else:  # refused, unless an earlier attempt made the line's row
                row = await self._row(directus, saga_line)
                if row is None and stock is None:
                    return {"outcome": "unknown_product"}
                if row is None:
                    return {"outcome": "insufficient", "stock": stock}
            if row["status"] == "reserving":
                await self._apply(directus, row, stock, -int(row["quantity"]), "held")
                return {"outcome": "held", "reservation": row["id"]}
            if row["status"] == "held":
                return {"outcome": "held", "reservation": row["id"]}
            return {"outcome": "released"}

    async def release(self, tenant: str, saga_line: str, product: str) -> dict[str, Any]:
        """Give back what ``saga_line`` reserved (nothing when it reserved nothing)."""
        async with self._lock(tenant, product):
            directus = self.writer(tenant)
            await self._settle(directus, tenant, product)
            row = await self._row(directus, saga_line)
            if row is None or row["status"] == "released":
                return {"outcome": "none" if row is None else "released"}
            stock = await self._stock(directus, product)
            if row["status"] == "held":
                expected = (stock or 0) + int(row["quantity"])
                row = await directus.update_item(
                    RESERVATIONS, row["id"], {"status": "releasing", "stock_expected": expected}
                )
                self.faults.reached("release:row_marked")
            await self._apply(directus, row, stock, int(row["quantity"]), "released")
            return {"outcome": "released"}

    async def _settle(self, directus: DirectusClient, tenant: str, product: str) -> None:
        if (tenant, product) in self._settled:
            return
        pending = await directus.items_where(
            RESERVATIONS,
            {"product": {"_eq": int(product)}, "status": {"_in": ["reserving", "releasing"]}},
        )
        for row in pending:
            stock = await self._stock(directus, product)
            if row["status"] == "reserving":
                await self._apply(directus, row, stock, -int(row["quantity"]), "held")
            else:
                await self._apply(directus, row, stock, int(row["quantity"]), "released")
        self._settled.add((tenant, product))

    async def _apply(
        self,
        directus: DirectusClient,
        row: dict[str, Any],
        stock: int | None,
        delta: int,
        done: str,
    ) -> None:
        """Apply ``row``'s change (``delta``) to its product unless its ``stock``, read
        under the product's lock (``None``: the product is gone), shows it applied; then
        mark the row ``done``."""
        product = str(row["product"])
        if stock is None:
            raise SourceError(f"product {product} of reservation {row['saga_line']} is gone")
        if stock != row["stock_expected"]:  # not applied yet
            stock += delta
            await directus.update_item(PRODUCTS, product, {"stock": stock})
            self.faults.reached(f"{done}:stock_written")
            if stock < 0:
                self.metrics.oversold.inc()
                log.warning(
                    "product %s: stock %d after reservation %s: oversold by an edit "
                    "outside the sagas",
                    product,
                    stock,
                    row["saga_line"],
                )
        await directus.update_item(RESERVATIONS, row["id"], {"status": done})

    @staticmethod
    async def _row(directus: DirectusClient, saga_line: str) -> dict[str, Any] | None:
        rows = await directus.items_where(RESERVATIONS, {"saga_line": {"_eq": saga_line}})
        return rows[0] if rows else None

    @staticmethod
    async def _stock(directus: DirectusClient, product: str) -> int | None:
        rows = await directus.items_where(
            PRODUCTS, {"id": {"_eq": int(product)}}, fields="id,stock"
        )
        return int(rows[0]["stock"]) if rows else None

    async def _create(self, directus: DirectusClient, values: dict[str, Any]) -> dict[str, Any]:
        """The new reservation row; or, when Directus refuses it as a second row of its
        ``saga_line`` (an earlier attempt made it), that row."""
        try:
            created = await directus.create_item(RESERVATIONS, values)
        except SourceError as exc:
            if exc.code != "RECORD_NOT_UNIQUE":
                raise
        else:
            self.faults.reached("reserve:row_created")
            return created
        row = await self._row(directus, str(values["saga_line"]))
        if row is None:
            raise SourceError(
                f"reservation {values['saga_line']} is both taken and missing", retriable=True
            )
        return row
