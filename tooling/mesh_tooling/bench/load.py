"""A closed-loop HTTP load generator for ``mesh bench graphql``.

``concurrency`` asyncio tasks each keep one ``POST`` in flight, each going round-robin over
the target URLs. Requests finishing during the warm-up are not counted; afterwards, every
request that finishes inside the measured window counts, with its latency. A request is
an error unless it answers 200 with ``data`` and no ``errors`` (errors are counted in the
warm-up too).

The load's process samples its own CPU time (user + system, all threads) at the start
and the end of the measured window (:attr:`LoadResult.cpu_share`), and calls
``on_window("start")`` and ``on_window("end")`` there, so the caller can sample other
processes' CPU over the same window.

:func:`run_load` runs the same loop from a :class:`LoadSpec` in this process or in a
separate one (``python -m mesh_tooling.bench.load``: the spec as JSON on its standard
input; ``window start`` and ``window end`` lines on its standard output as the window
begins and ends, then the result as JSON), so the two can be compared: a load generator on
the same cores as what it measures may be what bounds the figures.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

"""Per-request headers for ``(url, body)``: e.g. a fleet signature, new for each request."""
OnWindow = Callable[[str], None]
"""Called with ``"start"`` and ``"end"`` as the measured window begins and ends."""

LOAD_PROCESSES = ("bench", "separate")
"""Where the load runs: in the calling (bench) process, or in a separate OS process."""


def cores() -> int:
    """The cores this process may run on (the machine's, unless pinned)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
    cpu_s: float = 0.0
    """CPU seconds the load's process spent in the measured window (user + system)."""
    cpu_wall_s: float = 0.0
    """Wall seconds between the load process's two CPU samples."""
    cores: int = field(default_factory=cores)
    """The cores the load's process could run on (what :attr:`cpu_share` divides by)."""

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

    @property
    def cpu_share(self) -> float:
        """The load process's CPU in the window: its CPU seconds / the window / the cores,
        in [0, 1] (1: every core busy generating load)."""
        if self.cpu_wall_s <= 0:
            return 0.0
        return max(0.0, min(1.0, self.cpu_s / self.cpu_wall_s / self.cores))

    def to_json(self) -> dict[str, Any]:
        """The result as JSON (what a separate load process answers)."""
        return {
            "seconds": self.seconds,
            "latencies_ms": [round(v, 4) for v in self.latencies_ms],
            "errors": self.errors,
            "first_error": self.first_error,
            "per_target": dict(self.per_target),
            "cpu_s": self.cpu_s,
            "cpu_wall_s": self.cpu_wall_s,
            "cores": self.cores,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoadResult:
        return cls(
            seconds=float(data["seconds"]),
            latencies_ms=[float(v) for v in data["latencies_ms"]],
            errors=int(data["errors"]),
            first_error=data["first_error"],
            per_target=Counter({str(k): int(v) for k, v in data["per_target"].items()}),
            cpu_s=float(data["cpu_s"]),
            cpu_wall_s=float(data["cpu_wall_s"]),
            cores=int(data["cores"]),
        )


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
    on_window: OnWindow | None = None,
) -> LoadResult:
    """Post ``body(rng)`` to ``urls`` with ``concurrency`` requests in flight (and
    ``headers`` besides the JSON content type). A
    non-200 answer is an error, and so is a GraphQL answer with errors or without data
    unless ``graphql`` is false. ``on_window`` is called as the measured window starts
    and ends; the result holds this process's CPU time between the two."""
    result = LoadResult(seconds=duration)
    headers = {"Content-Type": "application/json", **(headers or {})}
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    started = time.perf_counter()
    window_start = started + warmup
    window_end = window_start + duration

    async def window() -> None:
        await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
        if on_window is not None:
            on_window("start")
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.sleep(max(0.0, window_end - time.perf_counter()))
        result.cpu_s = time.process_time() - cpu
        result.cpu_wall_s = time.perf_counter() - wall
        if on_window is not None:
            on_window("end")

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
        await asyncio.gather(window(), *(client(n, http) for n in range(concurrency)))
    return result


@dataclass
class LoadSpec:
    """One window's load, as data a separate process can be given: :func:`generate_load`
    with ``body`` drawing uniformly from ``bodies`` (one body: always it)."""

    urls: list[str]
    bodies: list[bytes]
    concurrency: int
    warmup: float
    duration: float
    seed: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    graphql: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "urls": self.urls,
            "bodies": [base64.b64encode(b).decode() for b in self.bodies],
            "concurrency": self.concurrency,
            "warmup": self.warmup,
            "duration": self.duration,
            "seed": self.seed,
            "headers": self.headers,
            "graphql": self.graphql,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoadSpec:
        return cls(
            urls=list(data["urls"]),
            bodies=[base64.b64decode(b) for b in data["bodies"]],
            concurrency=int(data["concurrency"]),
            warmup=float(data["warmup"]),
            duration=float(data["duration"]),
            seed=int(data["seed"]),
            headers=dict(data["headers"]),
            graphql=bool(data["graphql"]),
        )


async def _run_here(spec: LoadSpec, on_window: OnWindow | None) -> LoadResult:
    bodies = spec.bodies
    if not bodies:
        raise ValueError("a load needs at least one body")
    only = bodies[0]
    body: Callable[[random.Random], bytes] = (
        (lambda r: only) if len(bodies) == 1 else (lambda r: r.choice(bodies))
    )
    return await generate_load(
        spec.urls, body, concurrency=spec.concurrency, warmup=spec.warmup,
        duration=spec.duration, seed=spec.seed, headers=spec.headers or None,
        graphql=spec.graphql, on_window=on_window,
    )  # fmt: skip


async def _run_separate(spec: LoadSpec, on_window: OnWindow | None) -> LoadResult:
    """The load of ``spec`` from a child process (see the module docstring)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh_tooling.bench.load",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    errors = asyncio.ensure_future(proc.stderr.read())
    try:
        proc.stdin.write(json.dumps(spec.to_json()).encode())
        await proc.stdin.drain()
        proc.stdin.close()
        for edge in ("start", "end"):
            line = await proc.stdout.readline()
            if line.strip() != f"window {edge}".encode():
                break
            if on_window is not None:
                on_window(edge)
        out = await proc.stdout.read()
        code = await proc.wait()
        stderr = (await errors).decode(errors="replace")
        try:
            return LoadResult.from_json(json.loads(out))
        except (ValueError, KeyError, TypeError):
            raise RuntimeError(
                f"the load process exited with {code} without a result: "
                f"{stderr.strip()[-2000:] or out[:500]!r}"
            ) from None
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if not errors.done():
            errors.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await errors


async def run_load(
    spec: LoadSpec, *, process: str = "bench", on_window: OnWindow | None = None
) -> LoadResult:
    """Generate ``spec``'s load in this process (``process="bench"``) or in a separate
    OS process (``"separate"``: the same loop, the result passed back as JSON)."""
    if process not in LOAD_PROCESSES:
        raise ValueError(f"process must be one of {LOAD_PROCESSES}, got {process!r}")
    if process == "bench":
        return await _run_here(spec, on_window)
    return await _run_separate(spec, on_window)


def main() -> int:
    """The separate load process: the spec from stdin, the window edges and the result to
    stdout."""
    spec = LoadSpec.from_json(json.load(sys.stdin))

    def edge(name: str) -> None:
        sys.stdout.write(f"window {name}\n")
        sys.stdout.flush()

    result = asyncio.run(_run_here(spec, edge))
    sys.stdout.write(json.dumps(result.to_json()))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
