"""Sagas on the fleet: each worker drives the unfinished sagas of the partitions it owns."""

from __future__ import annotations

from typing import ClassVar

from mesh.context import MeshContext
from mesh.runtime.services import Service, add_service
from mesh.sagas.service import Sagas


class SagaSupervisor(Service):
    """Resumes owned sagas after a rebalance, stops driving lost ones, and stops cleanly."""

    sagas: ClassVar[Sagas]

    async def on_start(self) -> None:
        self.sagas.context.membership.on_revoked(self._on_revoked)

    async def _on_revoked(self, revoked: set[tuple[str, int]]) -> None:
        topic = self.sagas.store.changelog_topic
        await self.sagas.revoke({p for t, p in revoked if t == topic})

    async def drain(self) -> None:
        await self.sagas.stop()

    async def on_stop(self) -> None:
        await self.sagas.stop()

    @Service.task
    async def _reconcile_forever(self) -> None:
        while not self.should_stop:
            self.sagas.reconcile()
            await self.sleep(0.5)


def register_sagas(context: MeshContext) -> None:
    """Run the saga supervisor on ``context.app`` (when sagas are on)."""
    if context.sagas is None:
        return

    class _Supervisor(SagaSupervisor):
        pass

    _Supervisor.sagas = context.sagas
    add_service(context.app, _Supervisor)
