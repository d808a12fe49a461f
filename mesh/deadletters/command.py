"""``mesh deadletters list|show|replay``: the sub-commands, their arguments, exit codes.

Exit codes: 0 done; 1 some letters were not replayed (each one says why); 2 the command
could not run (bad arguments, configuration, broker or topic unreachable, offset not found).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from mesh.deadletters.errors import DeadLetterToolError

if TYPE_CHECKING:
    from mesh.deadletters.letters import Letter, LetterRef
    from mesh.deadletters.reader import DeadLetterReader
    from mesh.deadletters.replay import Rereads
    from mesh.runtime.kafka import KafkaConnection
    from mesh.settings import Settings

EXIT_OK, EXIT_NOT_REPLAYED, EXIT_USAGE = 0, 1, 2
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """``30m``, ``2h``, ``1d12h``, … as a duration (argparse type)."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a duration: a number and a unit (s, m, h, d, w), e.g. 30m, 2h, 1d12h"
        )
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def add_deadletter_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``deadletters`` and its actions to the ``mesh`` parser."""
    parser = sub.add_parser(
        "deadletters", help="list, show and replay the dead-letter topic (<app id>.dead_letters)"
    )
    actions = parser.add_subparsers(dest="deadletters", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="one line per letter, then a count by stage (no consumer group is used)"
    )
    listing.add_argument("--stage", help="only letters of this stage (e.g. mirror-write)")
    listing.add_argument("--topic", help="only letters of records of this topic")
    start = listing.add_mutually_exclusive_group()
    start.add_argument(
        "--since", type=parse_duration, metavar="DURATION", help="only letters of the last 2h, 1d…"
    )
    start.add_argument(
        "--from-offset", type=int, metavar="N", help="start at offset N of every partition"
    )
    listing.add_argument("--limit", type=int, metavar="N", help="print the N oldest matching")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    listing.set_defaults(run=_run_list)
    show = actions.add_parser(
        "show", help="one letter in full: headers, key and value (Avro decoded)"
    )
    show.add_argument("offset", metavar="OFFSET", help="OFFSET or PARTITION:OFFSET, as listed")
    show.add_argument("--partition", type=int, metavar="P", help="the partition of OFFSET")
    show.set_defaults(run=_run_show)
    replay = actions.add_parser(
        "replay",
        help="send letters back to their topic, or have their source read the item again",
    )
    replay.add_argument("offsets", nargs="*", metavar="OFFSET", help="PARTITION:OFFSET, as listed")
    replay.add_argument("--stage", help="every letter of this stage")
    replay.add_argument("--all", action="store_true", help="every letter")
    replay.add_argument(
        "--dry-run", action="store_true", help="say what would happen, send nothing"
    )
    replay.add_argument("--yes", action="store_true", help="replay several without asking")
    replay.set_defaults(run=_run_replay)


def _quiet_clients() -> None:
    # The Kafka client logs each failed connection attempt; the command says it once,
    # with what to do.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def _fail(exc: Exception) -> int:
    print(f"mesh deadletters: {exc}", file=sys.stderr)
    return EXIT_USAGE


def _connection(settings: Settings) -> tuple[KafkaConnection, str]:
    from mesh.deadletter import dead_letter_topic
    from mesh.runtime.kafka import KafkaConnection

    return KafkaConnection.from_settings(settings), dead_letter_topic(settings.app_id)


def _progress(read: int, total: int) -> None:
    print(f"read {read} of {total} records…", file=sys.stderr, flush=True)


async def _select(
    reader: DeadLetterReader,
    *,
    stage: str | None = None,
    topic: str | None = None,
    since: timedelta | None = None,
    from_offset: int | None = None,
) -> list[Letter]:
    """The letters matching, oldest first, from the end offsets read now."""
    bounds = await reader.bounds()
    ends = {p: end for p, (_, end) in bounds.items()}
    starts = {p: max(first, from_offset or 0) for p, (first, _) in bounds.items()}
    not_before = 0
    if since is not None:
        not_before = int((time.time() - since.total_seconds()) * 1000)
        starts = await reader.offsets_since(not_before, ends) or starts
    found = []
    async for letter in reader.scan(starts, ends, _progress):
        if letter.timestamp_ms < not_before:
            continue
        if stage is not None and letter.stage != stage:
            continue
        if topic is not None and letter.origin.topic != topic:
            continue
        found.append(letter)
    found.sort(key=lambda letter: (letter.timestamp_ms, letter.id))
    return found


def _run_list(settings: Settings, args: argparse.Namespace) -> int:
    _quiet_clients()
    if args.limit is not None and args.limit < 1:
        return _fail(DeadLetterToolError("--limit must be 1 or more"))
    try:
        return asyncio.run(_list(settings, args))
    except DeadLetterToolError as exc:
        return _fail(exc)


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    from mesh.deadletters.reader import DeadLetterReader
    from mesh.deadletters.render import list_json, list_line, summary

    kafka, topic = _connection(settings)
    async with DeadLetterReader(kafka, topic) as reader:
        letters = await _select(
            reader,
            stage=args.stage,
            topic=args.topic,
            since=args.since,
            from_offset=args.from_offset,
        )
    by_stage = Counter(letter.stage for letter in letters)
    shown = letters[: args.limit] if args.limit else letters
    if args.json:
        print(list_json(shown, by_stage))
        return EXIT_OK
    for letter in shown:
        print(list_line(letter))
    print(summary(by_stage, len(shown)))
    return EXIT_OK


def _run_show(settings: Settings, args: argparse.Namespace) -> int:
    _quiet_clients()
    from mesh.codec import RegistryClient
    from mesh.deadletters.letters import LetterRef
    from mesh.deadletters.render import registry_decoder, show_lines
    from mesh.deadletters.replay import plan

    try:
        ref = LetterRef.parse(args.offset, args.partition)
        kafka, topic = _connection(settings)
        letter = asyncio.run(_fetch(kafka, topic, ref))
    except DeadLetterToolError as exc:
        return _fail(exc)
    what = plan(letter)
    replay = f"{what.action.value}: {what.detail}"
    decoder = registry_decoder(RegistryClient.from_settings(settings))
    for line in show_lines(letter, topic, replay, decoder):
        print(line)
    return EXIT_OK


async def _fetch(kafka: KafkaConnection, topic: str, ref: LetterRef) -> Letter:
    from mesh.deadletters.reader import DeadLetterReader

    async with DeadLetterReader(kafka, topic) as reader:
        return await reader.fetch(ref)


def _run_replay(settings: Settings, args: argparse.Namespace) -> int:
    _quiet_clients()
    chosen = [bool(args.offsets), args.stage is not None, args.all]
    if sum(chosen) != 1:
        return _fail(
            DeadLetterToolError(
                "say which letters to replay: OFFSET… (PARTITION:OFFSET, as listed), "
                "--stage STAGE or --all (one of them)"
            )
        )
    try:
        return asyncio.run(_replay(settings, args))
    except DeadLetterToolError as exc:
        return _fail(exc)


def _confirmed(count: int) -> bool | None:
    """Asks on the terminal; ``None`` when stdin is not one."""
    if not sys.stdin.isatty():
        return None
    answer = input(f"replay {count} dead letters? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
    from mesh.deadletters.letters import LetterRef
    from mesh.deadletters.reader import DeadLetterReader, unreachable
    from mesh.deadletters.replay import Action, Replayer, plan_all, replay_summary
    from mesh.runtime.kafka import KafkaError
    from mesh.sources.rereads import reread_topic

    kafka, topic = _connection(settings)
    async with DeadLetterReader(kafka, topic) as reader:
        if args.offsets:
            refs = [LetterRef.parse(text) for text in args.offsets]
            letters = [await reader.fetch(ref) for ref in refs]
        else:
            letters = await _select(reader, stage=None if args.all else args.stage)
    if not letters:
        print("no dead letters to replay")
        return EXIT_OK
    plans = plan_all(letters)
    targets = {p.letter.origin.topic for p in plans if p.action is Action.RESEND}
    if any(p.action is Action.REREAD for p in plans):
        targets.add(reread_topic(settings.app_id))
    topics = await _partition_counts(kafka, {t for t in targets if t})
    acting = sum(1 for p in plans if p.action is not Action.NONE and p.same_as is None)
    if len(plans) > 1 and acting and not args.yes and not args.dry_run:
        answer = _confirmed(len(plans))
        if answer is None:
            return _fail(
                DeadLetterToolError(
                    f"replaying {len(plans)} letters needs a confirmation and stdin is not a "
                    "terminal: pass --yes (or --dry-run to see what would happen)"
                )
            )
        if not answer:
            print("nothing replayed")
            return EXIT_NOT_REPLAYED
    producer = None
    if not args.dry_run and acting:
        producer = kafka.producer(acks="all", request_timeout_ms=15_000)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            await producer.stop()
            raise unreachable(kafka, exc) from None
    try:
        rereads = _reread_sender(settings, producer, topics)
        outcomes = await Replayer(topic, topics, producer, rereads).run(plans)
    finally:
        if producer is not None:
            await producer.stop()
    for outcome in outcomes:
        letter = outcome.plan.letter
        print(f"{letter.id!s:>9}  {letter.stage:<16}  {letter.origin}  → {outcome.text}")
    for line in replay_summary(outcomes, dry_run=args.dry_run):
        print(line)
    return EXIT_OK if all(o.replayed for o in outcomes) else EXIT_NOT_REPLAYED


async def _partition_counts(kafka: KafkaConnection, topics: set[str]) -> dict[str, int]:
    """The partition count of each of ``topics`` that exists."""
    from mesh.deadletters.reader import unreachable
    from mesh.runtime.kafka import KafkaError

    if not topics:
        return {}
    admin = kafka.admin(request_timeout_ms=15_000)
    try:
        await admin.start()
        # All of them: a request naming a missing topic may make the broker create it.
        described = await admin.describe_topics()
    except (KafkaError, OSError) as exc:
        raise unreachable(kafka, exc) from None
    finally:
        await admin.close()
    return {
        str(t["topic"]): len(t["partitions"])
        for t in described
        if t["topic"] in topics and t.get("error_code", 0) == 0 and t["partitions"]
    }


def _reread_sender(settings: Settings, producer: Any, topics: dict[str, int]) -> Rereads | None:
    """Sends a re-read request to the app's re-read topic (``None`` for a dry run)."""
    from mesh.sources.rereads import RereadRequest, reread_topic

    if producer is None:
        return None
    name = reread_topic(settings.app_id)

    async def send(request: RereadRequest) -> str:
        if name not in topics:
            raise DeadLetterToolError(
                f"topic {name} does not exist: the workers create it when they start (or "
                "apply `mesh topics`); start the fleet of this version, then replay again"
            )
        meta = await (await producer.send(name, request.dumps(), key=request.key))
        return f"{name}[{meta.partition}]@{meta.offset}"

    return send
