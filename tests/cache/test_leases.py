"""Leases on peers' changes (:mod:`mesh.cache.leases`): whenever a reader counts on a
lease, the owner has not ended it: it pushes every change to the reader, or (revoked)
waits with its writes until the grant ends.

Property-tested over interleavings of lease requests (each with its own delays on the way
to the owner and back), pushes that fail (the owner revokes), and the passing of time.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.cache.leases import GrantedLeases, HeldLeases

LEASE_S = 2.0
OWNER, READER = "http://owner", "http://reader"


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(order=True)
class Event:
    at: float
    seq: int
    kind: str = field(compare=False)
    data: float = field(default=0.0, compare=False)


ask = st.tuples(st.just("ask"), st.floats(0, 6), st.floats(0, 1.5), st.floats(0, 1.5))
revoke = st.tuples(st.just("revoke"), st.floats(0, 6), st.just(0.0), st.just(0.0))
look = st.tuples(st.just("look"), st.floats(0, 6), st.just(0.0), st.just(0.0))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(ask, revoke, look), min_size=1, max_size=40))
def test_a_lease_counted_on_is_one_the_owner_pushes_to(
    actions: list[tuple[str, float, float, float]],
) -> None:
    clock = Clock()
    held, granted = HeldLeases(LEASE_S, clock), GrantedLeases(LEASE_S, clock)
    events: list[Event] = []
    for n, (kind, at, there, back) in enumerate(actions):
        if kind == "ask":
            # The owner sees it ``there`` later, the reader its answer ``back`` after that.
            heapq.heappush(events, Event(at + there, 2 * n, "grant", at))
            heapq.heappush(events, Event(at + there + back, 2 * n + 1, "answer", at))
        else:
            heapq.heappush(events, Event(at, 2 * n, kind))
        # Look often, so that a lease counted on past its owner's grant cannot hide.
        for step in range(1, 9):
            heapq.heappush(events, Event(at + step * 0.3, 2 * n + 1, "look"))
    answers: dict[float, bool] = {}
    # Looks are ordered by when they happen, ties in time included: what the owner could do
    # at a look before a grant of the same instant says nothing of a response after it.
    ended_at: list[int] = []  # looks at which the owner could write without the reader
    recorded: list[tuple[int, int]] = []  # (look, epoch) of responses recorded
    for look in itertools.count():
        if not events:
            break
        event = heapq.heappop(events)
        clock.now = event.at
        if event.kind == "grant":
            answers[event.data] = granted.grant(READER)
            continue
        if event.kind == "answer":
            if answers[event.data]:
                held.granted(OWNER, event.data)
            else:
                held.refused(OWNER)
            continue
        if event.kind == "revoke":
            granted.revoke(READER)  # a push to the reader failed
            continue
        # A look: a response recorded now. One recorded earlier may be served now only if
        # the owner could not, at any look since, write a change without reaching it.
        if granted.ended(READER):
            ended_at.append(look)
        recorded.append((look, held.epoch))
        for since, epoch in recorded:
            if held.valid([OWNER], epoch):
                assert not any(since <= e for e in ended_at), (since, clock.now)


def test_a_revoked_reader_is_refused_until_its_grant_ends() -> None:
    clock = Clock()
    granted = GrantedLeases(LEASE_S, clock)
    assert granted.grant(READER)
    clock.now = 0.5
    assert granted.revoke(READER) == LEASE_S - 0.5
    assert granted.holders() == []
    assert not granted.grant(READER)
    clock.now = LEASE_S
    assert granted.grant(READER)
    assert granted.holders() == [READER]


def test_a_lapsed_lease_starts_a_new_epoch() -> None:
    clock = Clock()
    held = HeldLeases(LEASE_S, clock)
    held.granted(OWNER, 0.0)
    epoch = held.epoch
    assert held.valid([OWNER], epoch)
    clock.now = 1.0
    held.granted(OWNER, 1.0)  # renewed in time: same epoch
    assert held.valid([OWNER], epoch)
    clock.now = 5.0
    assert not held.valid([OWNER], epoch)  # lapsed
    held.granted(OWNER, 5.0)
    assert not held.valid([OWNER], epoch)
    assert held.valid([OWNER], held.epoch)
    assert not held.valid([OWNER, "http://other"], held.epoch)  # no lease of that one
