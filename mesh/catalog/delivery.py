"""Message delivery for the catalog, without Faust's per-message machinery.

Faust's fetcher hands every fetched message to the conductor through
``wait_first(callback(message), suspend_flow.wait())``: a few asyncio tasks, a lock, an
``Event`` object and a queue hop per message, which caps a worker near 5,000 messages/s
whatever consumes them. Messages of the catalog's topics instead go straight into the
ingestor's buffer (:class:`MessageBuffer`) while flow is active; when the buffer is full,
delivery waits for room *or* for flow to be suspended, exactly as Faust races the
callback against ``suspend_flow``, so rebalances interrupt it as Faust intends. Other
topics keep Faust's path.

This replaces ``_drain_messages`` on one consumer instance (not the class): the loop below
is Faust 0.15's, with the delivery step changed.
"""

from __future__ import annotations

import asyncio
import types
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING  # type: ignore[attr-defined]
from mode import Service


class MessageBuffer:
    """Raw messages of the catalog's topics, waiting to be folded."""

    def __init__(self, topics: set[str], maxsize: int) -> None:
        self.topics = topics
        self.maxsize = maxsize
        self.messages: deque[Any] = deque()
        self.arrived = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()

    def put(self, message: Any) -> None:
        """Add a message (the caller checked :meth:`full`)."""
        self.messages.append(message)
        self.arrived.set()
        if len(self.messages) >= self.maxsize:
            self.room.clear()

    def full(self) -> bool:
        """True when delivery must wait."""
        return len(self.messages) >= self.maxsize

    async def wait(self) -> None:
        """Return once messages are buffered."""
        while not self.messages:
            self.arrived.clear()
            await self.arrived.wait()

    def take(self, most: int) -> list[Any]:
        """Up to ``most`` buffered messages (none if the buffer was cleared meanwhile)."""
        count = min(most, len(self.messages))
        batch = [self.messages.popleft() for _ in range(count)]
        if len(self.messages) < self.maxsize:
            self.room.set()
        return batch

    def clear(self) -> None:
        """Drop what is buffered (on revocation: the next owner fetches it again)."""
        self.messages.clear()
        self.room.set()


def install_fast_delivery(app: faust.App, buffer: MessageBuffer) -> None:
    """Make ``app``'s consumer deliver the buffer's topics into ``buffer``."""
    consumer = app.consumer
    drain = _make_drain(app, buffer)
    consumer._drain_messages = types.MethodType(drain, consumer)  # type: ignore[attr-defined]


def _make_drain(app: faust.App, buffer: MessageBuffer) -> Callable[..., Any]:
    flow_active = app.flow_control.is_active
    topics = buffer.topics

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
                            if message.topic not in topics:
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            else:
                                if buffer.full():
                                    await self.wait_first(
                                        buffer.room.wait(), self.suspend_flow.wait()
                                    )
                                if flow_active() and not suspended():
                                    buffer.put(message)
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
