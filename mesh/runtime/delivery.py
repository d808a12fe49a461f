"""Message delivery for the catalog, without Faust's per-message machinery.

Faust's fetcher hands every fetched message to the conductor through
``wait_first(callback(message), suspend_flow.wait())``: a few asyncio tasks, a lock, an
``Event`` object and a queue hop per message, which caps a worker near 5,000 messages/s
whatever consumes them. Messages of the catalog's topics instead go straight into the
ingestor's buffer (:class:`MessageBuffer`) while flow is active; when the buffer is full,
delivery waits for room *or* for flow to be suspended, exactly as Faust races the
callback against ``suspend_flow``, so rebalances interrupt it as Faust intends. Other
topics keep Faust's path.

Delivery also decides where each catalog partition is read from (:class:`Positions`).
Around a rebalance, Faust drops records it has already taken from the consumer: when its
recovery ends it empties the set of active partitions that a pending fetch was given, the
fetch then returns the records of every partition, and Faust discards those of paused
partitions; it also breaks off a batch when flow stops. Its rewind after the rebalance
seeks only partitions with a committed offset. A partition nobody has committed yet (a
relations-topic partition whose owner died before its first commit, say) keeps the
advanced position, and its dropped records are never read: relation changes were lost
that way. So a catalog partition is delivered only once this module has rewound it in the
current generation, to its committed offset or, when there is none, to its first offset;
any record it cannot deliver makes it rewind the partition again first.

Delivery hands the buffer aiokafka's records as the consumer thread fetched them, a
partition's run at a time: no Faust ``Message`` per record, no per-record scheduling or
checks. The checks Faust makes per record (flow active, same generation, partition
active, may deliver) can only change when the loop yields, so they are made before each
run and again after every ``await``; the read offset is stored before every ``await``,
as Faust would have stored it record by record. Other topics keep Faust's path, record by
record, as before. The records are acknowledged in bulk (:meth:`Subscription.ack`), into
the same bookkeeping Faust commits from.

This replaces ``_drain_messages`` on one consumer instance (not the class): the loop below
is Faust 0.15's (with ``getmany`` inlined), the delivery step changed.
"""

from __future__ import annotations

import asyncio
import types
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import faust
from aiokafka.errors import IllegalStateError
from faust.transport.consumer import CONSUMER_FETCHING, ensure_TP
from faust.types import TP
from faust.types.tuples import ack_lock
from mode import Service
from mode.utils.futures import notify


class MessageBuffer:
    """Raw messages of the catalog's topics, waiting to be folded."""

    def __init__(self, topics: set[str], maxsize: int) -> None:
        self.topics = topics
        self.maxsize = maxsize
        self.messages: deque[Any] = deque()
        self.arrived = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.closed = False

    def put(self, message: Any) -> None:
        """Add a message (the caller checked :meth:`full`)."""
        self.messages.append(message)
        self.arrived.set()
        if len(self.messages) >= self.maxsize:
            self.room.clear()

    def put_all(self, messages: list[Any]) -> None:
        """Add messages (the caller took no more than :meth:`room_left`)."""
        self.messages.extend(messages)
        self.arrived.set()
        if len(self.messages) >= self.maxsize:
            self.room.clear()

    def room_left(self) -> int:
        """How many messages may be added before delivery must wait."""
        return self.maxsize - len(self.messages)

    def full(self) -> bool:
        """True when delivery must wait."""
        return len(self.messages) >= self.maxsize

    async def wait(self) -> None:
        """Return once messages are buffered, or the buffer is closed."""
        while not self.messages and not self.closed:
            self.arrived.clear()
            await self.arrived.wait()

    def close(self) -> None:
        """Wake :meth:`wait` for good: the consumer of the buffer is stopping."""
        self.closed = True
        self.arrived.set()

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


class Positions:
    """Which catalog partitions may be delivered: those rewound in this generation.

    After each rebalance every assigned catalog partition is *unsettled* until
    :meth:`settle` has sought it to its committed offset (its first offset when nothing
    was ever committed). A record that cannot be delivered unsettles its partition again,
    so it is read anew rather than skipped.
    """

    def __init__(self, app: faust.App, topics: set[str]) -> None:
        self.app = app
        self.topics = topics
        self.generation: int | None = None
        """The generation the unsettled set was taken for."""
        self.unsettled: set[TP] = set()
        self._flow_active = app.flow_control.is_active

    def steady(self) -> bool:
        """True when the group is not rebalancing and the consumer's flow runs."""
        app = self.app
        return bool(
            self._flow_active()
            and not app.consumer.suspend_flow.is_set()  # type: ignore[attr-defined]
            and not app.rebalancing
        )

    def may_deliver(self, tp: TP) -> bool:
        """True when a record of ``tp`` fetched now can be delivered."""
        return (
            self.steady()
            and self.generation == self.app.consumer_generation_id
            and tp not in self.unsettled
        )

    def drop(self, tp: TP) -> None:
        """A record of ``tp`` was not delivered: rewind before delivering more."""
        self.unsettled.add(tp)

    async def settle(self, consumer: Any) -> None:
        """Rewind what is unsettled, once the group is steady (called between fetches)."""
        if not self.steady():
            return
        generation = self.app.consumer_generation_id
        assigned = {tp for tp in consumer.assignment() if tp.topic in self.topics}
        if generation != self.generation:
            self.generation = generation
            self.unsettled = set(assigned)
        self.unsettled &= assigned
        if not self.unsettled:
            return
        pending = set(self.unsettled)
        try:
            # Faust's own rewind (every assigned partition with a commit), then ours.
            committed = await consumer.seek_to_committed()
            fresh = [tp for tp in pending if not committed.get(tp)]
            if fresh:
                first = await consumer.earliest_offsets(*fresh)
                await consumer.seek_wait({tp: first[tp] for tp in first})
        except IllegalStateError:
            return  # the assignment changed meanwhile: the next generation settles again
        for tp in pending:
            offset = committed.get(tp) or None
            consumer._read_offset[ensure_TP(tp)] = offset
            if offset is not None:
                consumer._committed_offset[ensure_TP(tp)] = offset
        if self.app.consumer_generation_id == generation:
            self.unsettled -= pending


class Subscription:
    """Topics whose messages are delivered into a :class:`MessageBuffer` (in order per
    partition) and acknowledged by the caller once handled."""

    def __init__(self, app: faust.App, topics: set[str], partitions: int, buffer: MessageBuffer):
        self.app = app
        self.buffer = buffer
        # Subscribed through a Faust channel, so its consumer group assigns the topics;
        # internal: missing topics are created with the fleet's partition count.
        self.channel = app.topic(
            *sorted(topics),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
            internal=True,
        )
        self.positions = Positions(app, topics)

    def install(self) -> None:
        """Subscribe, and have the app's consumer deliver these topics into the buffer."""
        self.app.topics.add(self.channel)
        consumer = self.app.consumer
        drain = _make_drain(self.buffer, self.positions)
        consumer._drain_messages = types.MethodType(drain, consumer)  # type: ignore[attr-defined]

    def ack(self, messages: list[Any]) -> None:
        """Mark ``messages`` handled: the consumer commits their offsets.

        What ``Consumer.ack`` does for each, in one pass under its lock: each offset not
        acked yet and not below the committed one joins its partition's acked offsets.
        (The records are aiokafka's, never tracked as Faust's unacked messages.)"""
        consumer: Any = self.app.consumer
        by_tp: dict[tuple[str, int], list[int]] = {}
        for message in messages:
            key = (message.topic, message.partition)
            offsets = by_tp.get(key)
            if offsets is None:
                offsets = by_tp[key] = []
            offsets.append(message.offset)
        acks_enabled_for = self.app.topics.acks_enabled_for
        with ack_lock:
            try:
                for (topic, partition), offsets in by_tp.items():
                    if not acks_enabled_for(topic):
                        continue
                    tp = TP(topic, partition)
                    committed = consumer._committed_offset[tp]
                    acked_index = consumer._acked_index[tp]
                    acked = consumer._acked[tp]
                    for offset in offsets:
                        if (committed is None or offset >= committed) and (
                            offset not in acked_index
                        ):
                            acked_index.add(offset)
                            acked.append(offset)
                            consumer._n_acked += 1
            finally:
                notify(consumer._waiting_for_ack)


def _make_drain(buffer: MessageBuffer, positions: Positions) -> Callable[..., Any]:
    topics = buffer.topics

    async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover
        callback = self.callback
        to_message = self._to_message
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        track_end_offset = self.app.monitor.track_tp_end_offset
        yield_every = 100
        num_since_yield = 0
        app = self.app

        def stopped(generation: int) -> bool:
            """Faust stops taking records of a fetch once flow stops or the group moves."""
            return not self.flow_active or app.consumer_generation_id != generation

        def taken_from(tp: TP, active: Any) -> bool:
            """Faust takes a fetched record only of a partition active or buffered."""
            return active is None or tp in active or tp in self._buffered_partitions

        async def deliver(tp: TP, records: list[Any], generation: int, active: Any) -> bool:
            """Put a catalog partition's fetched records into the buffer, a run at a time
            (as many as fit); False when the rest of the fetch must not be delivered."""
            track_end_offset(tp, self.highwater(tp))
            acks = acks_enabled_for(tp.topic)
            r_offset = get_read_offset(tp)
            taken, count = 0, len(records)
            gap_at: int | None = None
            while taken < count:
                # Checked anew after every await; nothing else changes them.
                if stopped(generation):
                    positions.drop(tp)  # the rest is read again once settled
                    return False
                if not taken_from(tp, active) or not positions.may_deliver(tp):
                    positions.drop(tp)  # read again from its committed offset
                    return True
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                    continue
                if buffer.room_left() <= 0:
                    await self.wait_first(buffer.room.wait(), self.suspend_flow.wait())
                    continue
                run: list[Any] = []
                room = buffer.room_left()
                while taken < count and len(run) < room:
                    record = records[taken]
                    offset = record.offset
                    if r_offset is not None and offset < r_offset:
                        taken += 1
                        continue
                    if acks and r_offset and offset - r_offset > 1 and gap_at != offset:
                        gap_at = offset  # recorded below, once the run before it is in
                        break
                    run.append(record)
                    r_offset = offset
                    taken += 1
                if run:
                    buffer.put_all(run)
                    set_read_offset(tp, r_offset)
                if gap_at is not None and taken < count and records[taken].offset == gap_at:
                    assert r_offset is not None
                    await self._add_gap(tp, r_offset + 1, gap_at)
                    continue
                await asyncio.sleep(0)  # the ingestor folds what arrived
            return True

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                await positions.settle(self)
                set_flag(CONSUMER_FETCHING)
                await self.sleep(0)
                if not self.should_stop:
                    # Consumer.getmany, inlined: the catalog's records skip its iterator.
                    records, active = await self._wait_next_records(1.0)
                    generation = app.consumer_generation_id
                    if records is None or self.should_stop:
                        unset_flag(CONSUMER_FETCHING)
                        continue
                    if not self.flow_active:
                        try:
                            await self.perform_seek()
                        except Exception as ex:
                            self.log.warning(f"exception performing seek when flow not active {ex}")
                        unset_flag(CONSUMER_FETCHING)
                        continue
                    others = {}
                    going = True
                    for tp, tp_records in records.items():
                        if tp.topic not in topics:
                            others[tp] = tp_records
                        elif going:
                            going = await deliver(tp, tp_records, generation, active)
                        elif tp_records:
                            positions.drop(tp)  # fetched, not delivered: read it again
                    for tp, record in self.scheduler.iterate(others) if going else ():
                        if stopped(generation):
                            break
                        if not taken_from(tp, active):
                            continue
                        track_end_offset(tp, self.highwater(tp))
                        message = to_message(tp, record)
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
