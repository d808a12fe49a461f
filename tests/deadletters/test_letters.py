"""The parts of ``mesh deadletters`` that need no broker: names, durations, what a replay
of each stage means, and how letters and values are printed."""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import timedelta

import pytest

from mesh.deadletter import dead_letter_headers
from mesh.deadletters.command import parse_duration
from mesh.deadletters.errors import DeadLetterToolError
from mesh.deadletters.letters import Letter, LetterId, LetterRef
from mesh.deadletters.render import list_line, raw, shorten, show_value, summary
from mesh.deadletters.replay import Action, plan, plan_all
from mesh.errors import CodecError, UnknownSchemaError
from mesh.runtime.kafka import KafkaConnection
from mesh.sources.rereads import RereadInbox, RereadRequest, reread_topic

RECORD = {"topic": "customers.directus.entity_changed", "partition": 1, "offset": 40}
ITEM = {"source": "directus", "collection": "products", "item": "42", "position": 1234}


def letter(
    stage: str,
    context: dict[str, object],
    *,
    offset: int = 0,
    value: bytes | None = b"v",
    own: list[tuple[str, bytes]] | None = None,
) -> Letter:
    headers = dead_letter_headers(stage=stage, error=CodecError("bad"), context=context, keep=own)
    return Letter(LetterId(0, offset), 1_764_000_000_000, b"k", value, tuple(headers))


def test_letters_are_named_partition_colon_offset() -> None:
    assert LetterRef.parse("3:12") == LetterRef(3, 12)
    assert LetterRef.parse("12") == LetterRef(None, 12)
    assert LetterRef.parse("12", partition=2) == LetterRef(2, 12)
    with pytest.raises(DeadLetterToolError, match="PARTITION:OFFSET"):
        LetterRef.parse("3-12")


def test_durations() -> None:
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("1d12h") == timedelta(days=1, hours=12)
    for bad in ("", "10", "2 hours", "1h-"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)


def test_each_stage_has_a_replay_or_says_why_not() -> None:
    assert plan(letter("catalog-decode", RECORD)).action is Action.RESEND
    assert plan(letter("catalog-tenant", RECORD)).action is Action.RESEND
    assert plan(letter("catalog-relation", RECORD)).action is Action.RESEND
    assert plan(letter("mirror-decode", RECORD)).action is Action.RESEND
    assert plan(letter("mirror-write", RECORD)).action is Action.RESEND
    assert plan(letter("map", ITEM)).action is Action.REREAD
    assert plan(letter("encode", ITEM)).action is Action.REREAD
    key = plan(letter("catalog-key", RECORD))
    assert key.action is Action.NONE
    assert "producer must send a correct event" in key.detail
    unknown = plan(letter("mirror-frobnicate", RECORD))
    assert unknown.action is Action.NONE
    assert "no replay" in unknown.detail
    tombstone = plan(letter("mirror-decode", RECORD, value=None))
    assert tombstone.action is Action.NONE
    assert plan(letter("mirror-write", {"offset": 3})).action is Action.NONE  # no topic


def test_a_record_named_by_several_letters_is_replayed_once() -> None:
    plans = plan_all(
        [
            letter("catalog-decode", RECORD, offset=0),
            letter("mirror-decode", RECORD, offset=1),
            letter("mirror-decode", {**RECORD, "offset": 41}, offset=2),
        ]
    )
    assert [p.same_as for p in plans] == [None, LetterId(0, 0), None]


def test_the_record_s_own_headers_are_kept_and_the_dead_letter_ones_removed() -> None:
    own = [("dictamesh.tenant", b"default"), ("traceparent", b"00-ab-cd-01")]
    found = letter("mirror-write", RECORD, own=own)
    assert found.original_headers() == own
    assert found.origin.topic == RECORD["topic"]
    assert found.origin.partition == 1
    # A letter of a replayed letter: the earlier dead-letter headers do not pile up.
    again = dead_letter_headers(
        stage="mirror-write", error=ValueError("x"), context=RECORD, keep=found.headers
    )
    assert [name for name, _ in again].count("dictamesh.stage") == 1


def test_lines_and_values() -> None:
    line = list_line(letter("map", ITEM, offset=5))
    assert line.split()[0] == "0:5"
    assert "directus/products/42@1234  CodecError: bad" in line
    assert shorten("a\n  b " + "x" * 200, 20) == "a b " + "x" * 15 + "…"
    assert summary(Counter({"map": 2, "catalog-key": 1}), 3) == (
        "3 dead letters: catalog-key 1, map 2"
    )
    assert summary(Counter(), 0) == "no dead letters"
    assert raw(b'{"id": 1}') == '{"id": 1}'
    assert raw(b"\x00\x01") == "hex 00 01 (2 bytes)"
    assert raw(None) == "(null)"

    def unknown(value: bytes, subject: str | None) -> tuple[str, object]:
        raise UnknownSchemaError("schema id 9 is not known")

    framed = b"\x00\x00\x00\x00\x09\x02"
    assert show_value(framed, unknown)[0] == "value      (not decoded: schema id 9 is not known)"
    assert show_value(framed, lambda v, s: ("Avro", {"a": 1}))[:2] == ["value      (Avro)", "  {"]


def test_re_read_requests_fold_into_what_is_pending() -> None:
    inbox = RereadInbox(KafkaConnection(["127.0.0.1:1"]), reread_topic("shop"), declare=False)
    first = RereadRequest("directus", "products", "42", 1234, "shop.dead_letters:0:5")
    other = RereadRequest("crm", "customers", "7", 9)
    assert RereadRequest.loads(first.dumps()) == first
    inbox.take(first.key, first.dumps())
    inbox.take(other.key, other.dumps())
    inbox.take(b"junk", b"not json")  # ignored, with a warning
    assert inbox.pending("directus") == [first]
    inbox.take(first.key, None)  # done somewhere: a tombstone
    assert inbox.pending("directus") == []
    assert inbox.pending("crm") == [other]
    with pytest.raises(CodecError):
        RereadRequest.loads(b'{"source": "x"}')
