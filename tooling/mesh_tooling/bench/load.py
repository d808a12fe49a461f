"""A closed-loop HTTP load generator for ``mesh bench graphql``.

``concurrency`` asyncio tasks each keep one ``POST`` in flight, each going round-robin over
the target URLs. Requests finishing during the warm-up are not counted; afterwards, every
request that finishes inside the measured window counts, with its latency. A request is
an error unless it answers 200 with ``data`` and no ``errors`` (errors are counted in the
warm-up too).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class LoadResult:
    """What one measured window saw."""

    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    per_target: Counter[str] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        """Requests answered correctly inside the window."""
        return len(self.latencies_ms)

    @property
    def per_s(self) -> float:
        """Correct answers per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 0.50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 0.99)


async def generate_load(
    urls: Sequence[str],
    body: Callable[[random.Random], bytes],
    *,
    concurrency: int,
    warmup: float,
    duration: float,
    seed: int = 0,
    headers: dict[str, str] | None = None,
    graphql: bool = True,
) -> LoadResult:
    """Post ``body(rng)`` to ``urls`` with ``concurrency`` requests in flight (and
    ``headers`` besides the JSON content type). A non-200 answer is an error, and so is a
    GraphQL answer with errors or without data unless ``graphql`` is false."""
    result = LoadResult(seconds=duration)
    headers = {"Content-Type": "application/json", **(headers or {})}
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    started = time.perf_counter()
    window_start = started + warmup
    window_end = window_start + duration

    async def client(n: int, http: aiohttp.ClientSession) -> None:
        rng = random.Random(seed * 10_007 + n)
        for turn in itertools.count(n):
            url = urls[turn % len(urls)]
            data = body(rng)
            t0 = time.perf_counter()
            if t0 >= window_end:
                return
            error: str | None = None
            try:
                async with http.post(url, data=data, headers=headers) as resp:
                    answer = await resp.read()
                    if resp.status != 200:
                        error = f"HTTP {resp.status}: {answer[:200]!r}"
                    elif graphql and (b'"errors"' in answer or b'"data"' not in answer):
                        error = f"GraphQL error: {answer[:200]!r}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            t1 = time.perf_counter()
            if error is not None:  # counted in the warm-up too
                result.errors += 1
                result.first_error = result.first_error or error
            elif window_start <= t1 < window_end:
                result.latencies_ms.append((t1 - t0) * 1000)
                result.per_target[url] += 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(client(n, http) for n in range(concurrency)))
    return result
