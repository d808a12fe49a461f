"""Token buckets per subject: a burst, then the refill rate, and the wait until a token."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.auth.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate_and_subjects_apart() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [None, None, None]
    assert limiter.take("a") == pytest.approx(0.5)  # one token comes in 1/rate s
    assert limiter.take("b") is None  # another subject has its own bucket
    clock.now += 0.5
    assert limiter.take("a") is None
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 10  # the bucket refills to the burst, no more
    assert [limiter.take("a") for _ in range(4)][-1] is not None


@given(
    rate=st.floats(0.5, 100),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=200),
)
def test_never_more_than_the_burst_plus_the_rate_over_time(
    rate: float, burst: int, gaps: list[float]
) -> None:
    clock = Clock()
    limiter = RateLimiter(rate, burst, clock=clock)
    allowed = 0
    for gap in gaps:
        clock.now += gap
        if limiter.take("s") is None:
            allowed += 1
    assert allowed <= burst + rate * sum(gaps) + 1e-6


def test_a_limit_needs_a_rate_and_a_burst() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        RateLimiter(0, 1)
