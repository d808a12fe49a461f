"""A guard on Faust's table recovery: standby partitions assigned while a recovery runs.

faust-streaming 0.15.3 records a changelog partition added to recovery with offset
``None`` when its table has no persisted offset yet (``Recovery._add``), and only maps
``-1`` to the partition's start when it seeks (``Recovery._seek_offsets``). A standby
partition assigned after the recovery built its offsets keeps that ``None``, aiokafka
refuses to seek to it (``ValueError: Offset must be a positive integer``) and the worker
crashes. Seen in rolling restarts, where every stop and start rebalances. The guard reads
such a partition from its start, as Faust does for ``-1``.
"""

from __future__ import annotations

from typing import Any

from faust.tables.recovery import Recovery
from faust.types import TP

_original_seek = Recovery._seek_offsets


async def _seek_offsets(
    self: Recovery, consumer: Any, tps: set[TP], offsets: Any, title: str
) -> None:
    for tp in tps:
        if offsets.get(tp, -1) is None:
            offsets[tp] = -1  # no offset known: from the partition's start
    await _original_seek(self, consumer, tps, offsets, title)


def install_recovery_offset_guard() -> None:
    """Make Faust's recovery seek partitions without a known offset to their start."""
    Recovery._seek_offsets = _seek_offsets  # type: ignore[method-assign]
