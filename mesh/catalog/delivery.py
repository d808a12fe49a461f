"""Message delivery without a task per message.

Faust's fetcher hands each fetched message to the conductor through
``wait_first(callback(message), suspend_flow.wait())``, which schedules asyncio tasks
for every message and caps a worker near 5,000 messages/s whatever consumes them. When
flow is active and the catalog's queue has room, the callback cannot block (flow control
is not suspended, the put does not wait), so awaiting it directly is equivalent; only
then is the race against ``suspend_flow`` skipped. Otherwise the original path is taken,
so rebalances still interrupt delivery exactly as Faust intends.

This replaces ``_drain_messages`` on one consumer instance (not the class): the loop
below is Faust 0.15's, with that one change.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING  # type: ignore[attr-defined]
from mode import Service


def install_fast_delivery(app: faust.App, queue: asyncio.Queue[Any]) -> None:
    """Make ``app``'s consumer deliver directly while ``queue`` has room."""
    consumer = app.consumer
    consumer._drain_messages = types.MethodType(_make_drain(app, queue), consumer)  # type: ignore[attr-defined]


def _make_drain(app: faust.App, queue: asyncio.Queue[Any]) -> Any:
    flow_active = app.flow_control.is_active
    maxsize = queue.maxsize

    async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        suspended = self.suspend_flow.is_set
        qsize = queue.qsize
        yield_every = 100
        num_since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                ait = getmany(timeout=1.0)
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await asyncio.sleep(0)
                            num_since_yield = 0
                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if flow_active() and not suspended() and qsize() < maxsize:
                                await callback(message)
                            else:
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    return _drain_messages
