"""The in-process response cache: a stored response is never served after a key it read
changed, whatever the interleaving of requests, changes, evictions and rebalances."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.cache import ResponseCache

KEYS = [b"entities_customer|urn:c:1", b"entities_invoice|urn:i:1", b"relations_x|urn:c:1"]


def test_a_change_drops_the_responses_that_read_it_and_no_other() -> None:
    cache = ResponseCache(max_bytes=1 << 20)
    first, second = cache.open(), cache.open()
    first.local.update(KEYS[:2])
    second.local.add(KEYS[2])
    assert cache.put("q1", b"one", first)
    assert cache.put("q2", b"two", second)
    cache.close(first)
    cache.close(second)

    assert cache.invalidate({KEYS[1]}) == 1
    assert cache.get("q1") is None
    entry = cache.get("q2")
    assert entry is not None
    assert entry.body == b"two"


def test_a_request_that_read_a_key_before_it_changed_is_not_stored() -> None:
    cache = ResponseCache(max_bytes=1 << 20)
    recorder = cache.open()
    recorder.local.add(KEYS[0])
    cache.invalidate({KEYS[0]})
    assert not cache.put("q", b"old", recorder)
    assert cache.get("q") is None
    # A key read after the change saw the new value: nothing stops that response.
    later = cache.open()
    cache.invalidate({KEYS[0]})
    later.local.add(KEYS[0])
    assert cache.put("q", b"new", later)


def test_moving_partitions_forgets_everything_including_requests_in_flight() -> None:
    cache = ResponseCache(max_bytes=1 << 20)
    done, running = cache.open(), cache.open()
    cache.put("q", b"x", done)
    cache.clear()
    assert cache.get("q") is None
    assert cache.bytes == 0
    assert not cache.put("r", b"y", running)


def test_the_budget_evicts_least_recently_used_first() -> None:
    cache = ResponseCache(max_bytes=300)
    for name in ("a", "b", "c"):
        cache.put(name, b"x" * 90, cache.open())
    assert cache.get("a") is not None  # now the most recently used
    cache.put("d", b"x" * 90, cache.open())
    assert cache.get("b") is None
    assert [n for n in "acd" if cache.get(n) is not None] == ["a", "c", "d"]
    assert cache.bytes <= 300
    assert not cache.put("huge", b"x" * 400, cache.open())


_steps = st.one_of(
    st.tuples(st.just("start"), st.integers(0, 3)),
    st.tuples(st.just("read"), st.integers(0, 3), st.sampled_from(KEYS)),
    st.tuples(st.just("write"), st.sampled_from(KEYS)),
    st.tuples(st.just("finish"), st.integers(0, 3), st.sampled_from(["q1", "q2", "q3"])),
    st.tuples(st.just("get"), st.sampled_from(["q1", "q2", "q3"])),
    st.tuples(st.just("rebalance")),
)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(_steps, max_size=60), budget=st.integers(200, 2000))
def test_a_hit_always_shows_the_current_value_of_every_key_it_read(
    steps: list[tuple[Any, ...]], budget: int
) -> None:
    cache = ResponseCache(max_bytes=budget)
    truth = dict.fromkeys(KEYS, 0)
    running: dict[int, tuple[Any, dict[str, int]]] = {}
    for step in steps:
        match step:
            case ("start", r) if r not in running:
                running[r] = (cache.open(), {})
            case ("read", r, key) if r in running:
                recorder, seen = running[r]
                recorder.local.add(key)
                seen[key.decode()] = truth[key]
            case ("write", key):
                cache.invalidate({key})
                truth[key] += 1
            case ("finish", r, query) if r in running:
                recorder, seen = running.pop(r)
                cache.put(query, json.dumps(seen).encode(), recorder)
                cache.close(recorder)
            case ("get", query):
                entry = cache.get(query)
                if entry is not None:
                    seen = json.loads(entry.body)
                    assert seen == {k: truth[k.encode()] for k in seen}
            case ("rebalance",):
                cache.clear()
        stored = [cache.get(q) for q in ("q1", "q2", "q3")]
        assert cache.bytes == sum(e.size for e in stored if e is not None) <= budget
