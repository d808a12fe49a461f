"""Replaying dead letters: what a replay means for each stage, and doing it.

- A letter of a Kafka record (the catalog's and the mirror's stages) is sent back to the
  record's topic and partition with its key, value and own headers (the dead-letter ones
  removed) plus ``dictamesh.replayed-from`` naming the letter. Every consumer of that
  topic sees it again: the catalog and the mirror keep an entity's state only when its
  version is newer, so whoever had already applied it ignores it, and replaying a letter
  twice changes nothing.
- A letter of a source's item (change capture: ``map``, ``encode``) has no record to send:
  a re-read request goes to the source (:mod:`mesh.sources.rereads`), and the worker
  polling that source reads the item again and publishes it at the letter's position.
- A stage whose letters cannot become valid by a fix elsewhere (``catalog-key``: the record
  itself is wrong), or a stage this version does not know, is reported, not replayed.

A letter whose cause was not fixed comes back as a new letter: harmless, and visible.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mesh.deadletters.errors import DeadLetterToolError
from mesh.deadletters.letters import Letter, LetterId
from mesh.runtime.kafka import AIOKafkaProducer, KafkaError
from mesh.sources.rereads import RereadRequest

REPLAYED_FROM_HEADER = "dictamesh.replayed-from"
"""Header of a replayed record: ``<dead-letter topic>:<partition>:<offset>`` of its letter."""


class Action(StrEnum):
    """What replaying a letter does."""

    RESEND = "resend"
    REREAD = "reread"
    NONE = "none"


RESEND_STAGES: dict[str, str] = {
    "catalog-decode": "decoded again: fix first (register the schema the record names, fix "
    "MESH_SCHEMA_REGISTRY_URL)",
    "catalog-tenant": "checked again: declare the tenant (or the per-tenant topic) first",
    "catalog-relation": "applied to its relation index: declare the relation first",
    "mirror-decode": "decoded again by the mirror: fix first (schema, tenant, domain config)",
    "mirror-write": "written again by the mirror: fix first what Postgres refused (a "
    "constraint, a column type)",
}
"""Stages whose letters go back to their record's topic, and what to fix before."""

REREAD_STAGES: dict[str, str] = {
    "map": "read again from the source: fix first the item or the domain config",
    "encode": "read again from the source: fix first the Avro schema or the domain config",
}
"""Change-capture stages: the source reads the item again."""

NO_REPLAY: dict[str, str] = {
    "catalog-key": "the record itself is wrong (its key is not its URN, or its after record "
    "is another entity's): sent back it would be refused again; the producer must send a "
    "correct event",
}


@dataclass(frozen=True)
class Plan:
    """What replaying one letter will do."""

    letter: Letter
    action: Action
    detail: str
    """For RESEND and REREAD, what to fix first; for NONE, why not."""
    same_as: LetterId | None = None
    """An earlier letter of this replay with the same origin: the record goes once."""


def plan(letter: Letter) -> Plan:
    """What a replay of ``letter`` does, by its stage and origin."""
    stage, origin = letter.stage, letter.origin
    if stage in NO_REPLAY:
        return Plan(letter, Action.NONE, NO_REPLAY[stage])
    if stage in RESEND_STAGES:
        if not origin.is_record:
            return Plan(letter, Action.NONE, "its headers do not name the record's topic")
        if letter.value is None:
            return Plan(letter, Action.NONE, "a tombstone (no value): nothing to send back")
        return Plan(letter, Action.RESEND, RESEND_STAGES[stage])
    if stage in REREAD_STAGES:
        if not origin.is_item:
            return Plan(letter, Action.NONE, "its headers do not name the source's item")
        return Plan(letter, Action.REREAD, REREAD_STAGES[stage])
    return Plan(letter, Action.NONE, f"stage '{stage}' has no replay (not one this version knows)")


def plan_all(letters: Sequence[Letter]) -> list[Plan]:
    """The plans of ``letters``; a record (or item) named by several letters goes once."""
    first: dict[tuple[Any, ...], LetterId] = {}
    plans = []
    for letter in letters:
        found = plan(letter)
        if found.action is not Action.NONE:
            o = letter.origin
            what = (o.topic, o.partition, o.offset) if found.action is Action.RESEND else (
                o.source, o.collection, o.item, o.position)  # fmt: skip
            if what in first:
                found = Plan(letter, found.action, found.detail, same_as=first[what])
            else:
                first[what] = letter.id
        plans.append(found)
    return plans


@dataclass(frozen=True)
class Outcome:
    """What replaying one letter did."""

    plan: Plan
    replayed: bool
    text: str


Rereads = Callable[[RereadRequest], Awaitable[str]]
"""Sends one re-read request; returns where it went (raises DeadLetterToolError)."""


class Replayer:
    """Carries out plans with one producer (``None`` for a dry run)."""

    def __init__(
        self,
        dead_letter_topic: str,
        topics: dict[str, int],
        producer: AIOKafkaProducer | None,
        rereads: Rereads | None,
    ) -> None:
        """``topics``: partition count of every topic on the cluster."""
        self.dead_letter_topic = dead_letter_topic
        self.topics = topics
        self.producer = producer
        self.rereads = rereads

    async def run(self, plans: Sequence[Plan]) -> list[Outcome]:
        """Replay (or, without a producer, describe) each plan, in order."""
        outcomes: list[Outcome] = []
        sent: list[tuple[int, str, Awaitable[Any]]] = []
        for item in plans:
            if item.same_as is not None:
                outcome = Outcome(item, True, f"same origin as {item.same_as}: replayed once")
            elif item.action is Action.NONE:
                outcome = Outcome(item, False, f"not replayed: {item.detail}")
            elif item.action is Action.REREAD:
                outcome = await self._reread(item)
            else:
                outcome, sending = await self._resend(item)
                if sending is not None:
                    sent.append((len(outcomes), *sending))
            outcomes.append(outcome)
        for index, target, future in sent:
            item = outcomes[index].plan
            try:
                meta = await future
            except KafkaError as exc:
                outcomes[index] = Outcome(item, False, f"not replayed: sending failed ({exc})")
            else:
                outcomes[index] = Outcome(item, True, f"sent back to {target}@{meta.offset}")
        return outcomes

    async def _resend(self, item: Plan) -> tuple[Outcome, tuple[str, Awaitable[Any]] | None]:
        """The outcome, or (when sent) a placeholder and the target with its ack to await."""
        letter, origin = item.letter, item.letter.origin
        assert origin.topic is not None
        assert origin.partition is not None
        count = self.topics.get(origin.topic)
        if count is None:
            return Outcome(item, False, f"not replayed: topic {origin.topic} does not exist"), None
        # The record's partition, unless the topic has fewer now: then its key decides.
        partition = origin.partition if origin.partition < count else None
        target = f"{origin.topic}[{partition if partition is not None else 'by key'}]"
        if self.producer is None:
            return Outcome(item, True, f"would be sent back to {target} ({item.detail})"), None
        headers = [h for h in letter.original_headers() if h[0] != REPLAYED_FROM_HEADER]
        headers.append((REPLAYED_FROM_HEADER, f"{self.dead_letter_topic}:{letter.id}".encode()))
        try:
            future = await self.producer.send(
                origin.topic, letter.value, key=letter.key, partition=partition, headers=headers
            )
        except KafkaError as exc:
            return Outcome(item, False, f"not replayed: sending failed ({exc})"), None
        return Outcome(item, False, "sending"), (target, future)

    async def _reread(self, item: Plan) -> Outcome:
        origin = item.letter.origin
        assert origin.source
        assert origin.collection
        assert origin.item
        request = RereadRequest(
            source=origin.source,
            collection=origin.collection,
            item=origin.item,
            position=origin.position,
            letter=f"{self.dead_letter_topic}:{item.letter.id}",
        )
        if self.producer is None or self.rereads is None:
            return Outcome(
                item, True, f"source {origin.source} would read the item again ({item.detail})"
            )
        try:
            where = await self.rereads(request)
        except (DeadLetterToolError, KafkaError) as exc:
            return Outcome(item, False, f"not replayed: {exc}")
        return Outcome(item, True, f"re-read requested from source {origin.source} ({where})")


def replay_summary(outcomes: Sequence[Outcome], *, dry_run: bool) -> list[str]:
    """The closing lines of ``replay``."""
    done = Counter(o.plan.action for o in outcomes if o.replayed and o.plan.same_as is None)
    same = sum(1 for o in outcomes if o.plan.same_as is not None)
    refused = Counter(o.plan.letter.stage for o in outcomes if not o.replayed)
    verb = "would be" if dry_run else ""
    parts = []
    if done[Action.RESEND]:
        parts.append(f"{done[Action.RESEND]} {verb} sent back".replace("  ", " "))
    if done[Action.REREAD]:
        parts.append(f"{done[Action.REREAD]} {verb} re-read from their source".replace("  ", " "))
    if same:
        parts.append(f"{same} of an origin already in this replay")
    head = "dry run, nothing sent: " if dry_run else ""
    noun = "letter" if len(outcomes) == 1 else "letters"
    lines = [f"{head}{len(outcomes)} {noun}: " + (", ".join(parts) or "none replayed")]
    if refused:
        stages = ", ".join(f"{stage} {n}" for stage, n in sorted(refused.items()))
        lines.append(f"not replayed: {sum(refused.values())} ({stages})")
    if done[Action.RESEND] and not dry_run:
        lines.append(
            "a replayed record that was applied before is ignored (the catalog and the mirror "
            "keep only newer versions); one whose cause is not fixed becomes a new dead letter"
        )
    return lines
