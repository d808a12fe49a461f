"""Sagas in GraphQL: the ``placeOrder`` mutation and the ``saga``/``sagas`` queries.

``placeOrder(input)`` needs the ``orders:write`` scope and acts in the caller's tenant; it
returns the saga at once (``RUNNING``: poll ``saga(id)``). A second call with the same
``idempotencyKey`` returns the same saga. Malformed input (a non-numeric id, a quantity
below 1, more than :data:`~mesh.sagas.place_order.MAX_LINES` lines) is an error naming the
field, and no saga starts.
"""

from __future__ import annotations

from typing import Any

import graphene

from mesh.errors import SagaError, SagaInputError
from mesh.graphql.limits import PublicGraphQLError
from mesh.graphql.lists import PageInfo
from mesh.graphql.loader import Loader
from mesh.sagas.state import SagaState, SagaStatus

__all__ = ["ORDERS_WRITE", "saga_fields"]

ORDERS_WRITE = "orders:write"

SagaStatusEnum = graphene.Enum.from_enum(SagaStatus, description="Where a saga is.")


class SagaTransition(graphene.ObjectType):  # type: ignore[misc]
    """One persisted transition of a saga."""

    at = graphene.Float(required=True, description="Unix seconds.")
    event = graphene.String(required=True)
    step = graphene.String()
    attempt = graphene.Int(required=True)
    error = graphene.String()


class Saga(graphene.ObjectType):  # type: ignore[misc]
    """A saga: its status, what it was asked, what its steps returned, its history."""

    id = graphene.ID(required=True)
    type = graphene.String(required=True)
    status = graphene.Field(SagaStatusEnum, required=True)
    step = graphene.Int(required=True, description="The step being run or compensated.")
    error = graphene.String(description="Why it compensated (or failed to).")
    input = graphene.JSONString(required=True)
    result = graphene.JSONString(required=True, description="What each finished step returned.")
    created_at = graphene.Float(required=True)
    updated_at = graphene.Float(required=True)
    deadline_at = graphene.Float(required=True)
    history = graphene.List(graphene.NonNull(SagaTransition), required=True)

    @staticmethod
    def of(state: SagaState) -> dict[str, Any]:
        body = state.as_json()
        return {
            "id": state.id, "type": state.saga_type, "status": state.status.value,
            "step": state.step, "error": state.error, "input": state.input,
            "result": state.data, "created_at": state.created_at,
            "updated_at": state.updated_at, "deadline_at": state.deadline_at,
            "history": body["history"],
        }  # fmt: skip


class SagaConnection(graphene.ObjectType):  # type: ignore[misc]
    nodes = graphene.List(graphene.NonNull(Saga), required=True)
    page_info = graphene.Field(PageInfo, required=True)


class OrderLineInput(graphene.InputObjectType):  # type: ignore[misc]
    product = graphene.ID(required=True)
    quantity = graphene.Int(required=True)


class PlaceOrderInput(graphene.InputObjectType):  # type: ignore[misc]
    customer = graphene.ID(required=True)
    lines = graphene.List(graphene.NonNull(OrderLineInput), required=True)
    idempotency_key = graphene.String(
        required=True, description="The same key returns the same saga (1 to 200 characters)."
    )


def _loader(info: Any) -> Loader:
    loader: Loader = info.context
    loader.cacheable = False  # a saga's state changes without the catalog invalidating it
    return loader


def saga_fields(sagas: Any) -> tuple[dict[str, Any], type[graphene.ObjectType]]:
    """The Query fields (``saga``, ``sagas``) and the Mutation type, over ``sagas``
    (a :class:`~mesh.sagas.service.Sagas`)."""

    async def resolve_saga(root: Any, info: Any, id: str) -> dict[str, Any] | None:
        state = await sagas.get(_loader(info).tenant, id)
        if state is None:
            raise PublicGraphQLError(f"no saga with id {id}")
        return Saga.of(state)

    async def resolve_sagas(
        root: Any, info: Any, first: int | None = 20, after: str | None = None, status: Any = None
    ) -> dict[str, Any]:
        wanted = None if status is None else getattr(status, "value", status)
        first = 20 if first is None else first
        after = after or None
        try:
            found, more = await sagas.list(_loader(info).tenant, wanted, first, after)
        except SagaInputError as exc:
            raise PublicGraphQLError(str(exc)) from None
        return {
            "nodes": [Saga.of(s) for s in found],
            "page_info": {"has_next_page": more, "end_cursor": found[-1].id if found else None},
        }

    async def resolve_place_order(root: Any, info: Any, input: dict[str, Any]) -> dict[str, Any]:
        loader = _loader(info)
        principal = loader.principal
        if principal is None or not principal.has_scope(ORDERS_WRITE):
            raise PublicGraphQLError(f"placeOrder needs the scope {ORDERS_WRITE}")
        order = {
            "customer": input["customer"],
            "lines": [dict(line) for line in input["lines"]],
        }
        try:
            state = await sagas.start("place_order", loader.tenant, input["idempotency_key"], order)
        except SagaError as exc:  # malformed input, or the tenant cannot be written to
            raise PublicGraphQLError(f"placeOrder: {exc}") from None
        return Saga.of(state)

    query = {
        "saga": graphene.Field(
            Saga, id=graphene.ID(required=True), resolver=resolve_saga,
            description="One saga of the caller's tenant by id.",
        ),
        "sagas": graphene.Field(
            graphene.NonNull(SagaConnection),
            first=graphene.Int(default_value=20, description="At most 100."),
            after=graphene.String(description="The `endCursor` of the previous page."),
            status=graphene.Argument(SagaStatusEnum),
            resolver=resolve_sagas,
            description="The caller's tenant's sagas, in id order.",
        ),
    }  # fmt: skip
    mutation = type(
        "Mutation",
        (graphene.ObjectType,),
        {
            "place_order": graphene.Field(
                graphene.NonNull(Saga),
                input=graphene.Argument(graphene.NonNull(PlaceOrderInput)),
                resolver=resolve_place_order,
                description="Place an order: starts the place-order saga and returns it at "
                f"once (poll `saga(id)`). Needs the scope {ORDERS_WRITE}.",
            )
        },
    )
    return query, mutation
