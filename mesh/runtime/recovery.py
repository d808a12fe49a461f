"""Hooks into Faust's table recovery round, where it seeks the changelog partitions.

* **Bulk restore.** Before Faust replays the active partitions record by record, the ones
  far behind their changelog's end are rebuilt by :mod:`mesh.runtime.restore`; Faust then
  seeks past what was written. The seek runs under Faust's request timeout (its expiry
  stops the recovery service), so each round restores for at most half of it and, if work
  is left, asks Faust for another round (a rebalance does the same), which resumes from the
  offsets the last one reached.
* **Offset guard.** faust-streaming 0.15.3 records a changelog partition added to recovery
  with offset ``None`` when its table has no persisted offset yet (``Recovery._add``), and
  only maps ``-1`` to the partition's start when it seeks (``Recovery._seek_offsets``). A
  standby partition assigned after the recovery built its offsets keeps that ``None``,
  aiokafka refuses to seek to it (``ValueError: Offset must be a positive integer``) and
  the worker crashes. Seen in rolling restarts, where every stop and start rebalances. The
  guard reads such a partition from its start, as Faust does for ``-1``.
"""

from __future__ import annotations

import time
from typing import Any

from faust.tables.recovery import Recovery
from faust.types import TP

from mesh.runtime.restore import changelog_restore

_original_seek = Recovery._seek_offsets


async def _seek_offsets(
    self: Recovery, consumer: Any, tps: set[TP], offsets: Any, title: str
) -> None:
    for tp in tps:
        if offsets.get(tp, -1) is None:
            offsets[tp] = -1  # no offset known: from the partition's start
    restore = changelog_restore(self.app)  # type: ignore[arg-type]
    if restore is not None and title == "active":
        targets = restore.targets(
            {tp: self.tp_to_table[tp] for tp in tps if tp in self.tp_to_table},
            offsets,
            self.active_highwaters,
        )
        budget = float(self.app.conf.broker_request_timeout) / 2
        await restore.restore(targets, deadline=time.monotonic() + budget)
        for tp, target in targets.items():
            offsets[tp] = target.applied
        if any(target.remaining for target in targets.values()):
            self.signal_recovery_start.set()  # another round continues from here
    await _original_seek(self, consumer, tps, offsets, title)


def install_recovery_hooks() -> None:
    """Patch Faust's recovery seek with the bulk restore and the offset guard (once per
    process; the bulk restore acts only for apps it was installed on)."""
    Recovery._seek_offsets = _seek_offsets  # type: ignore[method-assign]
