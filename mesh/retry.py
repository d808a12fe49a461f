"""Full-jitter exponential backoff for calls to a system DictaMesh depends on (a source
such as Directus, the mirror's Postgres).

Only a :class:`~mesh.errors.MeshError` with ``retriable=True`` is retried; anything else
(a rejected token, a 400, a bug) is raised at once. The policy holds no state between
calls, so one instance can serve every request of a client concurrently.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from mesh.errors import MeshError

__all__ = ["RetryHook", "RetryPolicy", "parse_retry_after"]

T = TypeVar("T")

RetryHook = Callable[[MeshError, int, float], None]
"""Called before each retry sleep with the error, the retry number (1 for the first retry)
and the delay in seconds."""

_STOP_CHECK_S = 0.1
"""How often a sleeping retry asks ``should_stop``: a shutdown waits at most this long."""


class RetryPolicy:
    """Retries failed calls with full-jitter exponential backoff.

    The n-th retry (``n`` counted from 0) waits ``uniform(0, min(max_s, base_s * 2**n))``
    seconds ("full jitter": spreads a fleet's retries evenly instead of in waves).

    When the server sent Retry-After, the delay is ``max(retry_after, jittered)``, capped
    at ``max_s``. Why capped: ``max_s`` is the operator's promise that a source is tried
    again at least that often; a server asking for longer (or a broken proxy sending an
    hour) gets a request that fails fast with another 429, which costs it nothing, while
    an adapter stuck for an hour would look dead. Within that cap the server's wish wins.
    """

    def __init__(
        self,
        base_s: float,
        max_s: float,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        """``rng`` makes the jitter reproducible; ``sleep`` replaces ``asyncio.sleep``
        (tests use it to observe delays without waiting)."""
        if base_s <= 0 or max_s < base_s:
            raise ValueError(f"need 0 < base_s <= max_s, got base_s={base_s}, max_s={max_s}")
        self.base_s = base_s
        self.max_s = max_s
        self._rng = rng or random.Random()
        self._sleep = sleep or asyncio.sleep

    def ceiling(self, retry: int) -> float:
        """The largest delay the ``retry``-th retry (from 0) may wait, before Retry-After."""
        # 2**64 * base already exceeds any sane max_s; avoids float overflow for huge n.
        return self.max_s if retry >= 64 else min(self.max_s, self.base_s * 2**retry)

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the ``retry``-th retry (from 0)."""
        jittered = self._rng.uniform(0, self.ceiling(retry))
        if retry_after is None:
            return jittered
        return min(self.max_s, max(retry_after, jittered))

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        on_retry: RetryHook | None = None,
        should_stop: Callable[[], bool] | None = None,
        max_attempts: int | None = None,
    ) -> T:
        """Await ``fn()`` until it succeeds, retrying retriable :class:`MeshError`.

        ``max_attempts`` counts every try including the first (``None``: no limit). When
        attempts run out, or ``should_stop()`` turns true before or during a sleep, the
        last error is raised.
        """
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        retry = 0
        while True:
            try:
                return await fn()
            except MeshError as exc:
                if not exc.retriable:
                    raise
                if max_attempts is not None and retry + 1 >= max_attempts:
                    raise
                if should_stop is not None and should_stop():
                    raise
                last = exc
            wait = self.delay(retry, last.retry_after)
            retry += 1
            if on_retry is not None:
                on_retry(last, retry, wait)
            if not await self._pause(wait, should_stop):
                raise last

    async def _pause(self, seconds: float, should_stop: Callable[[], bool] | None) -> bool:
        """Sleep ``seconds``; False when ``should_stop`` turned true meanwhile."""
        if should_stop is None:
            await self._sleep(seconds)
            return True
        # should_stop is a plain callable, not an event: look at it in short slices so a
        # shutdown does not wait out a 30 s backoff.
        remaining = seconds
        while remaining > 0:
            step = min(remaining, _STOP_CHECK_S)
            await self._sleep(step)
            remaining -= step
            if should_stop():
                return False
        return True


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from an HTTP Retry-After header (delta-seconds or an HTTP date); ``None`` if
    absent or unreadable. Directus' rate limiter sends whole seconds, rounded, so often 0."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None
