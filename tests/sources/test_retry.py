"""RetryPolicy: full-jitter backoff bounds, Retry-After, and what ``call`` retries.

Delays are observed through the policy's ``sleep`` hook, so the properties run without
waiting; one test sleeps for real to show a shutdown interrupts a long backoff.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.errors import MeshError, SourceAuthError, SourceError
from mesh.retry import RetryPolicy, parse_retry_after

bases = st.floats(min_value=0.001, max_value=10.0)
factors = st.floats(min_value=1.0, max_value=1000.0)
retries = st.integers(min_value=0, max_value=2000)
retry_afters = st.floats(min_value=0.0, max_value=10_000.0)


class Recorder:
    """A fake sleep and an on_retry hook, recording what the policy asked for."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.retries: list[tuple[MeshError, int, float]] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def on_retry(self, error: MeshError, attempt: int, delay: float) -> None:
        self.retries.append((error, attempt, delay))


def failing(
    errors: list[SourceError], result: str = "ok"
) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """An async callable raising ``errors`` one per call, then returning ``result``."""
    calls = [0]

    async def fn() -> str:
        calls[0] += 1
        if calls[0] <= len(errors):
            raise errors[calls[0] - 1]
        return result

    return fn, calls


def policy(base: float, factor: float, seed: int, rec: Recorder) -> RetryPolicy:
    return RetryPolicy(base, base * factor, rng=random.Random(seed), sleep=rec.sleep)


@given(base=bases, factor=factors, retry=retries, seed=st.integers())
def test_delay_is_within_the_full_jitter_range(
    base: float, factor: float, retry: int, seed: int
) -> None:
    p = policy(base, factor, seed, Recorder())
    ceiling = base * factor if retry > 60 else min(base * factor, base * 2**retry)
    assert p.ceiling(retry) == pytest.approx(ceiling)
    assert 0.0 <= p.delay(retry) <= p.ceiling(retry)


@given(base=bases, factor=factors, retry=retries, retry_after=retry_afters, seed=st.integers())
def test_retry_after_is_honoured_up_to_the_maximum(
    base: float, factor: float, retry: int, retry_after: float, seed: int
) -> None:
    p = policy(base, factor, seed, Recorder())
    wanted = min(retry_after, p.max_s)
    delay = p.delay(retry, retry_after)
    assert wanted <= delay <= max(wanted, p.ceiling(retry))
    assert delay <= p.max_s


@given(
    failures=st.lists(st.floats(min_value=0, max_value=5) | st.none(), max_size=8),
    base=bases,
    factor=factors,
    seed=st.integers(),
)
async def test_retriable_errors_are_retried_until_success(
    failures: list[float | None], base: float, factor: float, seed: int
) -> None:
    rec = Recorder()
    errors = [SourceError("down", retriable=True, retry_after=ra) for ra in failures]
    fn, calls = failing(errors)
    assert await policy(base, factor, seed, rec).call(fn, on_retry=rec.on_retry) == "ok"
    assert calls[0] == len(errors) + 1
    assert [attempt for _, attempt, _ in rec.retries] == list(range(1, len(errors) + 1))
    assert [error for error, _, _ in rec.retries] == errors
    # on_retry announced exactly the delays the policy then slept.
    assert [delay for _, _, delay in rec.retries] == rec.sleeps
    for (_, attempt, delay), ra in zip(rec.retries, failures, strict=True):
        assert delay <= max(min(ra or 0, base * factor), base * 2 ** (attempt - 1))
        if ra is not None:
            assert delay >= min(ra, base * factor)


@given(before=st.integers(min_value=0, max_value=5), status=st.sampled_from([400, 401, 403, 404]))
async def test_non_retriable_errors_are_raised_at_once(before: int, status: int) -> None:
    rec = Recorder()
    final = SourceError("bad request", retriable=False, status=status)
    fn, calls = failing([SourceError("blip", retriable=True)] * before + [final])
    with pytest.raises(SourceError) as caught:
        await policy(0.01, 10, 0, rec).call(fn, on_retry=rec.on_retry)
    assert caught.value is final
    assert calls[0] == before + 1
    assert len(rec.retries) == before


async def test_auth_errors_and_other_exceptions_are_not_retried() -> None:
    rec = Recorder()
    fn, calls = failing([SourceAuthError("token rejected")])
    with pytest.raises(SourceAuthError):
        await policy(0.01, 10, 0, rec).call(fn)

    async def bug() -> None:
        raise KeyError("not a source failure")

    with pytest.raises(KeyError):
        await policy(0.01, 10, 0, rec).call(bug)
    assert rec.sleeps == []
    assert calls[0] == 1


@given(stop_after=st.integers(min_value=0, max_value=30), base=bases, factor=factors)
async def test_should_stop_raises_the_last_error(
    stop_after: int, base: float, factor: float
) -> None:
    """However many checks pass first, the call ends with the last error once stop is asked."""
    rec = Recorder()
    checks = [0]

    def should_stop() -> bool:
        checks[0] += 1
        return checks[0] > stop_after

    errors = [SourceError(f"down {i}", retriable=True) for i in range(100)]
    fn, calls = failing(errors)
    with pytest.raises(SourceError) as caught:
        await policy(base, factor, 1, rec).call(fn, should_stop=should_stop)
    assert caught.value is errors[calls[0] - 1]
    assert checks[0] == stop_after + 1  # nothing ran after the first True
    assert all(step <= 0.1 + 1e-9 for step in rec.sleeps)  # slept in slices, checking


@given(max_attempts=st.integers(min_value=1, max_value=10))
async def test_max_attempts_counts_every_try(max_attempts: int) -> None:
    rec = Recorder()
    errors = [SourceError(f"down {i}", retriable=True) for i in range(20)]
    fn, calls = failing(errors)
    with pytest.raises(SourceError) as caught:
        await policy(0.01, 10, 0, rec).call(fn, max_attempts=max_attempts)
    assert calls[0] == max_attempts
    assert caught.value is errors[max_attempts - 1]


async def test_a_shutdown_cuts_a_long_real_sleep_short() -> None:
    stop = asyncio.Event()
    fn, _ = failing([SourceError("down", retriable=True, retry_after=30)])
    asyncio.get_running_loop().call_later(0.2, stop.set)
    started = time.monotonic()
    with pytest.raises(SourceError):
        await RetryPolicy(1, 60).call(fn, should_stop=stop.is_set)
    assert time.monotonic() - started < 1.0


async def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="base_s"):
        RetryPolicy(0, 1)
    with pytest.raises(ValueError, match="base_s"):
        RetryPolicy(2, 1)
    fn, _ = failing([])
    with pytest.raises(ValueError, match="max_attempts"):
        await RetryPolicy(1, 2).call(fn, max_attempts=0)


def test_retry_after_header_values() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("1") == 1.0
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("-3") == 0.0
    future = datetime.now(UTC) + timedelta(seconds=120)
    seconds = parse_retry_after(format_datetime(future, usegmt=True))
    assert seconds is not None
    assert 115 <= seconds <= 120
    past = datetime.now(UTC) - timedelta(hours=1)
    assert parse_retry_after(format_datetime(past, usegmt=True)) == 0.0
