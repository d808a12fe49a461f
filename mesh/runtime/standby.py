"""Standby replicas kept current between rebalances.

Faust applies the changelog records a standby replica receives in batches of the table's
standby buffer size (1,000 records, one buffer per table) and writes a partial batch only
when a rebalance or a recovery starts. A replica of partitions that receive fewer writes
than that stayed behind indefinitely (found empty in tests), so it could neither answer
for an owner that does not (:meth:`mesh.catalog.router.Router.standby_readable`) nor say
how far behind it was. A timer writes the partial batches, keeping Faust's batching when
records arrive faster than that.
"""

from __future__ import annotations

from typing import Any, ClassVar

import faust

from mesh.runtime.services import Service, add_service

FLUSH_EVERY_S = 0.5
"""How stale a standby replica may get beyond what its changelog has delivered."""


class StandbyFlush(Service):
    """Writes the standby records Faust's recovery holds in partial batches."""

    app_: ClassVar[faust.App]

    @Service.timer(FLUSH_EVERY_S)
    async def _flush(self) -> None:
        recovery: Any = self.app_.tables.recovery  # type: ignore[attr-defined]
        if any(recovery.buffers.values()):
            # Faust's own flush (it runs at every recovery start and on revocation);
            # synchronous, so it never interleaves with the records being buffered.
            recovery.flush_buffers()


def keep_standbys_current(app: faust.App) -> None:
    """Run :class:`StandbyFlush` for ``app``."""

    class _Flush(StandbyFlush):
        pass

    _Flush.app_ = app
    add_service(app, _Flush)
