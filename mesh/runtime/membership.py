"""This worker's view of the group: who owns which partitions, and whether it is steady."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted
from yarl import URL


class Membership:
    """The group as Faust's assignor and recovery see it, for this worker.

    Active partitions are asked for once per key by GraphQL, and Faust's assignor builds a
    new set on every call: they are kept until the group rebalances (never while it does).
    """

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._active: dict[str, frozenset[int]] = {}
        self._stamp: tuple[int, int] | None = None
        self.moved = 0
        """Active partitions gained or lost by this worker since its first assignment:
        what a rebalance cost it (a restart of a static member should cost nothing)."""
        self._assigned: frozenset[tuple[str, int]] | None = None
        self.rebalances = 0
        """Assignments this worker received (its first included)."""
        app.on_partitions_assigned.connect(self._count_moves)  # type: ignore[arg-type]

    async def _count_moves(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        self.rebalances += 1
        actives = frozenset((tp.topic, tp.partition) for tp in self.app.assignor.assigned_actives())
        if self._assigned is not None:
            self.moved += len(actives ^ self._assigned)
        self._assigned = actives

    def rebalancing(self) -> bool:
        """True while the group is rebalancing (until this worker's recovery ends)."""
        return bool(self.app.rebalancing)

    def recovering(self) -> bool:
        """True while active partitions are being rebuilt from their changelogs."""
        return bool(getattr(self.app, "in_recovery", False))

    def tables_recovered(self) -> bool:
        """True once this generation's recovery has completed."""
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]
        return bool(recovery.completed.is_set())

    def recovery_remaining(self) -> int:
        """Changelog records the active tables still have to restore (0 once recovered)."""
        if self.tables_recovered():
            return 0
        recovery = self.app.tables.recovery  # type: ignore[attr-defined]
        return int(recovery.active_remaining_total())

    def consumer_lag(self, topics: set[str]) -> dict[tuple[str, int], int]:
        """Per actively owned partition of ``topics``: records after the last committed
        one, up to the highwater of the last fetch (partitions not fetched yet left out)."""
        consumer: Any = self.app.consumer
        committed = consumer._committed_offset  # Faust's: the last offset it committed
        lags: dict[tuple[str, int], int] = {}
        for tp in self.app.assignor.assigned_actives():
            if tp.topic not in topics:
                continue
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            done = committed.get(tp)
            lags[(tp.topic, tp.partition)] = max(
                int(highwater) - (0 if done is None else done + 1), 0
            )
        return lags

    def stopping(self) -> bool:
        """True once the app stops (its tables close): nothing is served from them."""
        return bool(self.app.should_stop)

    def steady(self) -> bool:
        """Neither rebalancing nor recovering."""
        return not self.rebalancing() and not self.recovering()

    def stamp(self) -> tuple[int, int] | None:
        """Changes with every rebalance; ``None`` while one is under way."""
        if not self.steady():
            return None
        return self.app.consumer_generation_id, self.app.rebalancing_count

    def active(self, topic: str) -> frozenset[int]:
        """Partitions of ``topic`` (a changelog or a source topic) this worker actively owns."""
        stamp = (self.app.consumer_generation_id, self.app.rebalancing_count)
        if self.rebalancing() or stamp != self._stamp:
            self._active = {}
            self._stamp = None if self.rebalancing() else stamp
        found = self._active.get(topic)
        if found is None:
            found = frozenset(
                tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic
            )
            if self._stamp is not None:
                self._active[topic] = found
        return found

    def standby(self, topic: str) -> frozenset[int]:
        """Partitions of ``topic`` this worker keeps a standby replica of (read from the
        changelog as the owner writes it: at most a moment behind)."""
        return frozenset(
            tp.partition for tp in self.app.assignor.assigned_standbys() if tp.topic == topic
        )

    def active_count(self) -> int:
        """How many topic partitions (of every topic) this worker actively owns."""
        return len(self.app.assignor.assigned_actives())

    def owner_url(self, table: str, topic: str, partition: int) -> str | None:
        """The web URL of the worker actively owning ``partition`` of ``table``'s changelog
        ``topic``, per the assignor's last assignment."""
        for url, topics in self.app.router.table_metadata(table).items():
            if partition in topics.get(topic, ()):
                return str(url)
        return None

    def peer_urls(self) -> list[str]:
        """The web URL of every worker of the group (this one included)."""
        return sorted(str(url) for url in self.app.assignor.tables_metadata())

    def is_self(self, url: str) -> bool:
        """True when ``url`` is this worker's own web server."""
        mine, other = URL(str(self.app.conf.canonical_url)), URL(url)
        return (mine.host, mine.port) == (other.host, other.port)

    def ready(self) -> bool:
        """Recovered, not rebalancing, not stopping: the worker serves what it owns."""
        return self.tables_recovered() and not self.rebalancing() and not self.stopping()

    def on_revoked(self, handler: Callable[[set[tuple[str, int]]], Awaitable[None]]) -> None:
        """Call ``handler`` with the ``(topic, partition)`` pairs being revoked, before the
        group moves them (the rebalance waits for it)."""

        async def receiver(sender: Any, *args: Any, **kwargs: Any) -> None:
            revoked = args[0] if args else kwargs.get("revoked", set())
            await handler({(tp.topic, tp.partition) for tp in revoked})

        self.app.on_partitions_revoked.connect(receiver)  # type: ignore[arg-type]

    def key_partition(self, topic: str, key: bytes) -> int | None:
        """The partition the consumer's metadata puts ``key`` in (``None`` before the
        consumer runs or while the topic is unknown)."""
        with contextlib.suppress(ConsumerNotStarted):
            found = self.app.consumer.key_partition(topic, key)
            return None if found is None else int(found)
        return None
