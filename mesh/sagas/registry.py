"""The saga types this fleet runs. Adding one: a module with its definition, and a line here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mesh.sagas.definition import SagaDefinition
from mesh.sagas.place_order import OrderServices, place_order

if TYPE_CHECKING:
    from mesh.sagas.service import Sagas

__all__ = ["saga_definitions"]


def saga_definitions(sagas: Sagas) -> dict[str, SagaDefinition]:
    """Every saga type by name, its services bound to this worker's ``sagas``."""
    deadline = sagas.context.settings.saga_deadline_s
    definitions = [
        place_order(lambda: OrderServices(sagas.reader, sagas.writer, sagas.stock_call), deadline),
    ]
    return {d.name: d for d in definitions}
