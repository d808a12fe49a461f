"""Per-subject request rate limits: a token bucket for each (tenant, subject).

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a request takes
one or is refused with the seconds until one is there (``Retry-After``). Buckets of
subjects not seen for a while are dropped (least recently used first) so a flood of
subjects cannot grow memory without bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_SUBJECTS = 100_000


class RateLimiter:
    """Token buckets by key."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float | None:
        """Take a token for ``key``: ``None`` when allowed, else the seconds to wait."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            allowed: float | None = None
        else:
            self._buckets[key] = (tokens, now)
            allowed = (1.0 - tokens) / self.rate
        if len(self._buckets) > MAX_SUBJECTS:
            self._buckets.popitem(last=False)
        return allowed
