"""The "place order" saga: check the customer and products, reserve stock for every line,
create the invoice and its items (``draft``), issue it.

Compensation releases the reservations and cancels (never deletes) the invoice. Every
Directus write is keyed for idempotency: a reservation by ``saga_line`` (saga id + line),
the invoice by ``saga_key`` (the saga id), each item by ``saga_key`` (saga id + line), all
unique in Directus; a retried step finds what an earlier attempt made.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from mesh.catalog.reader import CatalogReader
from mesh.errors import SagaInputError, SourceError, StepRefusedError, UnavailableError
from mesh.sagas.catalog import read_entities
from mesh.sagas.definition import SagaDefinition, Step, StepContext
from mesh.sources.directus.client import DirectusClient

__all__ = ["MAX_LINES", "MAX_QUANTITY", "OrderServices", "place_order", "validate_order"]

MAX_LINES = 50
"""Lines per order at most (distinct products)."""
MAX_QUANTITY = 10_000
_ID = re.compile(r"^[0-9]{1,18}$")

INVOICES = "invoices"
INVOICE_ITEMS = "invoice_items"

StockCall = Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""``stock(tenant, product, request)``: a reserve/release made by the product's owner."""


@dataclass
class OrderServices:
    """What the steps use."""

    reader: CatalogReader
    writer: Callable[[str], DirectusClient]
    """The saga's own Directus client of a tenant."""
    stock: StockCall


def _id(value: Any, what: str) -> str:
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not _ID.match(text):
        raise SagaInputError(f"{what} must be a numeric id, got {value!r}")
    return str(int(text))


def validate_order(raw: Any) -> dict[str, Any]:
    """``{"customer", "lines": [{"product", "quantity"}]}`` checked and normalised (ids as
    strings, a product's lines merged, in product order)."""
    if not isinstance(raw, dict):
        raise SagaInputError("the order must be an object with 'customer' and 'lines'")
    customer = _id(raw.get("customer"), "customer")
    lines = raw.get("lines")
    if not isinstance(lines, list) or not lines:
        raise SagaInputError("an order needs at least one line")
    merged: dict[str, int] = {}
    for n, line in enumerate(lines):
        if not isinstance(line, dict):
            raise SagaInputError(f"line {n + 1} must be an object with 'product' and 'quantity'")
        product = _id(line.get("product"), f"line {n + 1}: product")
        quantity = line.get("quantity")
        if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
            raise SagaInputError(
                f"line {n + 1}: quantity must be a positive integer, got {quantity!r}"
            )
        merged[product] = merged.get(product, 0) + quantity
        if merged[product] > MAX_QUANTITY:
            raise SagaInputError(f"line {n + 1}: at most {MAX_QUANTITY} units of a product")
    if len(merged) > MAX_LINES:
        raise SagaInputError(
            f"an order has at most {MAX_LINES} lines (products), this one {len(merged)}"
        )
    ordered = sorted(merged.items(), key=lambda item: int(item[0]))
    return {"customer": customer, "lines": [{"product": p, "quantity": q} for p, q in ordered]}


# -- steps ---------------------------------------------------------------------------------


async def check_order(ctx: StepContext) -> dict[str, Any]:
    """The customer exists and is active, every product exists; their prices now."""
    services: OrderServices = ctx.services
    customer_id = ctx.input["customer"]
    found = await read_entities(services.reader, ctx.tenant, "customer", [customer_id])
    customer = found.get(customer_id)
    if customer is None:
        raise StepRefusedError(f"customer {customer_id} does not exist")
    if customer.get("status") != "active":
        raise StepRefusedError(
            f"customer {customer_id} is {customer.get('status')!r}, not 'active'"
        )
    ids = [line["product"] for line in ctx.input["lines"]]
    products = await read_entities(services.reader, ctx.tenant, "product", ids)
    missing = [i for i in ids if products.get(i) is None]
    if missing:
        raise StepRefusedError(f"unknown product(s): {', '.join(missing)}")
    return {"prices": {i: str(products[i]["price"]) for i in ids}}  # type: ignore[index]


def _line_key(ctx: StepContext, n: int) -> str:
    return f"{ctx.saga.id}:{n}"


async def reserve_stock(ctx: StepContext) -> dict[str, Any]:
    services: OrderServices = ctx.services
    held = []
    for n, line in enumerate(ctx.input["lines"]):
        request = {
            "op": "reserve",
            "saga": ctx.saga.id,
            "saga_line": _line_key(ctx, n),
            "quantity": line["quantity"],
        }
        answer = await services.stock(ctx.tenant, line["product"], request)
        outcome = answer.get("outcome")
        if outcome == "insufficient":
            raise StepRefusedError(
                f"not enough stock of product {line['product']}: "
                f"{answer.get('stock')} left, {line['quantity']} ordered"
            )
        if outcome == "unknown_product":
            raise StepRefusedError(f"unknown product: {line['product']}")
        if outcome != "held":
            raise StepRefusedError(
                f"the reservation of product {line['product']} was already released"
            )
        held.append(answer.get("reservation"))
    return {"reservations": held}


async def release_stock(ctx: StepContext) -> None:
    services: OrderServices = ctx.services
    for n, line in enumerate(ctx.input["lines"]):
        request = {"op": "release", "saga": ctx.saga.id, "saga_line": _line_key(ctx, n)}
        await services.stock(ctx.tenant, line["product"], request)


async def _create_or_find(
    directus: DirectusClient, collection: str, values: dict[str, Any]
) -> dict[str, Any]:
    """The new item; or, when Directus refuses it as a second item of its ``saga_key``
    (an earlier attempt made it), that item."""
    try:
        return await directus.create_item(collection, values)
    except SourceError as exc:
        if exc.code != "RECORD_NOT_UNIQUE":
            raise
    found = await directus.items_where(collection, {"saga_key": {"_eq": values["saga_key"]}})
    if not found:
        raise UnavailableError(f"{collection} {values['saga_key']} is both taken and missing")
    return found[0]


async def create_invoice(ctx: StepContext) -> dict[str, Any]:
    services: OrderServices = ctx.services
    directus = services.writer(ctx.tenant)
    prices: dict[str, str] = ctx.data["check_order"]["prices"]
    lines = ctx.input["lines"]
    total = sum((Decimal(prices[line["product"]]) * line["quantity"] for line in lines), Decimal(0))
    invoice = await _create_or_find(
        directus,
        INVOICES,
        {
            "saga_key": ctx.saga.id,
            "number": f"SO-{ctx.saga.id[:8].upper()}",
            "customer": int(ctx.input["customer"]),
            "status": "draft",
            "total": str(total.quantize(Decimal("0.01"))),
        },
    )
    for n, line in enumerate(lines):
        await _create_or_find(
            directus,
            INVOICE_ITEMS,
            {
                "saga_key": _line_key(ctx, n),
                "invoice": invoice["id"],
                "product": int(line["product"]),
                "quantity": line["quantity"],
                "unit_price": prices[line["product"]],
            },
        )
    return {"invoice": invoice["id"], "number": invoice["number"], "total": str(total)}


async def cancel_invoice(ctx: StepContext) -> None:
    services: OrderServices = ctx.services
    directus = services.writer(ctx.tenant)
    found = await directus.items_where(
        INVOICES, {"saga_key": {"_eq": ctx.saga.id}}, fields="id,status"
    )
    for invoice in found:
        if invoice["status"] != "cancelled":
            await directus.update_item(INVOICES, invoice["id"], {"status": "cancelled"})


async def issue_invoice(ctx: StepContext) -> dict[str, Any]:
    services: OrderServices = ctx.services
    directus = services.writer(ctx.tenant)
    invoice = ctx.data["create_invoice"]["invoice"]
    issued_at = datetime.fromtimestamp(time.time(), UTC).isoformat()
    await directus.update_item(INVOICES, invoice, {"status": "issued", "issued_at": issued_at})
    return {"issued_at": issued_at}


def _writable(services: OrderServices, tenant: str) -> None:
    services.writer(tenant)  # raises SagaError when the tenant has no write token


def place_order(services: Callable[[], OrderServices], deadline_s: float) -> SagaDefinition:
    """The saga's definition (``services`` made once per worker)."""
    return SagaDefinition(
        name="place_order",
        validate=validate_order,
        services=services,
        preflight=_writable,
        deadline_s=deadline_s,
        steps=(
            Step("check_order", check_order),
            Step("reserve_stock", reserve_stock, compensate=release_stock),
            Step("create_invoice", create_invoice, compensate=cancel_invoice),
            Step("issue_invoice", issue_invoice),
        ),
    )
