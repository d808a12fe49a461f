"""The shared cache on a real Redis: a value fetched before a change can never be stored
after it, whatever the interleaving of readers and the owner."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from mesh.cache import SharedCache

KEYS = [b"entities_customer|urn:c:1", b"entities_product|urn:p:2"]


async def _open(url: str, ttl_s: int = 60) -> SharedCache:
    prefix = f"test-{secrets.token_hex(6)}:"
    return SharedCache(Redis.from_url(url), prefix, ttl_s)


async def _drop(cache: SharedCache) -> None:
    async for name in cache.client.scan_iter(match=cache.prefix + b"*"):
        await cache.client.delete(name)
    await cache.close()


@pytest_asyncio.fixture
async def shared(redis_url: str) -> AsyncIterator[SharedCache]:
    cache = await _open(redis_url)
    yield cache
    await _drop(cache)


async def test_a_filled_value_is_a_hit_until_the_owner_changes_it(shared: SharedCache) -> None:
    [(token, value)] = await shared.lookup(KEYS[:1])
    assert value is None
    await shared.fill([(KEYS[0], token, {"version": 1})])
    [(again, value)] = await shared.lookup(KEYS[:1])
    assert (again, value) == (token, {"version": 1})

    assert await shared.invalidate(KEYS) == 1  # the other key was never cached
    [(new_token, value)] = await shared.lookup(KEYS[:1])
    assert value is None
    assert new_token != token


async def test_a_fetch_that_raced_a_change_is_not_stored(shared: SharedCache) -> None:
    [(token, _)] = await shared.lookup(KEYS[:1])
    stale = {"version": 1}  # fetched from the owner ...
    await shared.invalidate(KEYS[:1])  # ... which then changed the key and wrote v2
    await shared.fill([(KEYS[0], token, stale)])
    [(_, value)] = await shared.lookup(KEYS[:1])
    assert value is None


async def test_an_expired_key_matches_no_token(redis_url: str) -> None:
    cache = await _open(redis_url, ttl_s=1)
    try:
        [(token, _)] = await cache.lookup(KEYS[:1])
        await asyncio.sleep(2.1)
        await cache.fill([(KEYS[0], token, {"version": 1})])
        [(_, value)] = await cache.lookup(KEYS[:1])
        assert value is None
    finally:
        await _drop(cache)


_steps = st.one_of(
    st.tuples(st.just("lookup"), st.integers(0, 2), st.sampled_from(KEYS)),
    st.tuples(st.just("fetch"), st.integers(0, 2)),
    st.tuples(st.just("fill"), st.integers(0, 2)),
    st.tuples(st.just("write"), st.sampled_from(KEYS)),
    st.tuples(st.just("evict"), st.sampled_from(KEYS)),
)


async def _interleave(url: str, steps: list[tuple[Any, ...]]) -> None:
    cache = await _open(url)
    truth = dict.fromkeys(KEYS, 0)
    readers: dict[int, dict[str, Any]] = {}
    try:
        for step in steps:
            match step:
                case ("lookup", r, key):
                    [(token, value)] = await cache.lookup([key])
                    if value is not None:  # a hit is the owner's current value
                        assert value == truth[key]
                    readers[r] = {"key": key, "token": token}
                case ("fetch", r) if r in readers:
                    readers[r]["value"] = truth[readers[r]["key"]]
                case ("fill", r) if "value" in readers.get(r, {}):
                    reader = readers.pop(r)
                    await cache.fill([(reader["key"], reader["token"], reader["value"])])
                case ("write", key):
                    await cache.invalidate([key])
                    truth[key] += 1
                case ("evict", key):  # Redis dropping a key under memory pressure
                    await cache.client.delete(cache.prefix + key)
        for key in KEYS:
            [(_, value)] = await cache.lookup([key])
            assert value in (None, truth[key])
    finally:
        await _drop(cache)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_steps, max_size=40))
def test_a_hit_is_always_the_owners_current_value(redis_url: str, steps: list[Any]) -> None:
    asyncio.run(_interleave(redis_url, steps))
