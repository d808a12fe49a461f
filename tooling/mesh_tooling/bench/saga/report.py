"""The report of ``mesh bench saga``: each phase's figures, the two paths pooled over the
rounds, their ratio against :data:`TARGET`; and the command itself (:func:`run_saga`)."""

from __future__ import annotations

import asyncio
import os
import statistics
from collections.abc import Sequence

from mesh_tooling.bench.load import LoadResult
from mesh_tooling.bench.saga.model import (
    BETWEEN,
    CEILING,
    MAX_UNITS,
    SAGAS,
    SEEN,
    Phase,
    SagaRun,
)
from mesh_tooling.bench.saga.phases import SagaBench
from mesh_tooling.settings import DevSettings

TARGET = 0.8
"""Sagas/s as a share of the ceiling's, measured in the same run."""
CPU_ORDER = ("client", "workers", "Directus", "Postgres", "broker", "other")


def _per_saga(phase: Phase) -> str:
    """CPU ms per order by process group, and the machine's busy share."""
    n = max(phase.finished, 1)
    parts = [
        f"{name} {phase.cpu_s[name] * 1000 / n:.1f}" for name in CPU_ORDER if name in phase.cpu_s
    ]
    busy = phase.cpu_s["machine"] / phase.cpu_s["wall"] / (os.cpu_count() or 1)
    return f"CPU ms per order: {', '.join(parts)}; machine {busy:.0%} busy"


def _others(phase: Phase, top: int = 4) -> str:
    """The other processes that used most CPU in the phase (% of a core), and what
    processes gone by the phase's end used."""
    wall = phase.cpu_s.get("wall") or 1.0
    named = [f"{name} {secs / wall:.0%}" for name, secs in phase.other_cpu_s[:top]]
    gone = phase.cpu_s.get("other", 0.0) - sum(secs for _, secs in phase.other_cpu_s)
    if gone / wall >= 0.01:
        named.append(f"processes that exited meanwhile {gone / wall:.0%}")
    return ", ".join(named)


def _parts(phase: Phase) -> str:
    """Where the orders' time went: the mean of each part."""
    out = []
    last = (BETWEEN, SEEN)
    order = [p for p in phase.parts_ms if p not in last] + [p for p in last if p in phase.parts_ms]
    for part in order:
        values = phase.parts_ms[part]
        text = f"{part} {statistics.fmean(values):.0f}"
        if part == BETWEEN and phase.transitions_ms:
            per = len(phase.transitions_ms) / len(values)
            text += f" ({per:.0f} x {statistics.fmean(phase.transitions_ms):.0f})"
        out.append(text)
    return ", ".join(out)


def _requests(phase: Phase) -> str:
    n = max(phase.orders, 1)
    each = ", ".join(f"{what} {count / n:.2g}" for what, count in sorted(phase.requests.items()))
    return f"{phase.requests.total() / n:.3g} ({each})"


def _writes(phase: Phase) -> str:
    n = max(phase.orders, 1)
    return ", ".join(f"{what} {count / n:g}" for what, count in sorted(phase.writes.items()))


def _line(phase: Phase) -> str:
    what = "sagas  " if phase.path == SAGAS else "ceiling"
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(phase.outcomes.items())) or "none"
    client = phase.cpu_s.get("client", 0.0) / phase.seconds if phase.seconds else 0.0
    return (
        f"round {phase.round} {what}: {phase.per_s:6.1f} sagas/s, p50 {phase.p50_ms:6.0f} ms, "
        f"p99 {phase.p99_ms:6.0f} ms, {phase.finished}/{phase.orders} in {phase.seconds:.1f} s "
        f"({outcomes}; errors {phase.errors}); load client CPU {client:.0%} of a core"
    )


def _pooled(path: str, phases: list[Phase], rounds: int) -> str:
    """One path over all rounds: its orders per second of measuring, percentiles of all."""
    pooled = LoadResult(
        sum(p.seconds for p in phases), [ms for p in phases for ms in p.latencies_ms]
    )
    return (
        f"{path:<7} over {rounds} rounds: {pooled.per_s:6.1f} sagas/s, p50 "
        f"{pooled.p50_ms:6.0f} ms, p99 {pooled.p99_ms:6.0f} ms of {pooled.requests} orders"
    )


def ratios(phases: Sequence[Phase]) -> list[float]:
    """Per round: sagas/s over the ceiling's sagas/s."""
    out = []
    for r in sorted({p.round for p in phases}):
        rates = {p.path: p.per_s for p in phases if p.round == r}
        if rates.get(CEILING) and SAGAS in rates:
            out.append(rates[SAGAS] / rates[CEILING])
    return out


def report(run: SagaRun) -> list[str]:
    """The report's lines: each phase with its CPU and writes, then the ratio."""
    lines = []
    for phase in run.phases:
        lines.append(_line(phase))
        if phase.statuses:
            read = ", ".join(f"{k} {v}" for k, v in sorted(phase.statuses.items()))
            lines.append(f"        statuses read back through GraphQL saga(id): {read}")
        lines.append(f"        {_per_saga(phase)}")
        if phase.other_cpu_s:
            lines.append(f"        other processes (share of a core): {_others(phase)}")
        lines.append(f"        Directus writes per order: {_writes(phase) or 'none'}")
        if phase.requests:
            lines.append(f"        Directus requests per order: {_requests(phase)}")
        if phase.parts_ms:
            lines.append(f"        time per order (mean ms): {_parts(phase)}")
        if phase.first_error:
            lines.append(f"        first error: {phase.first_error}")
    rounds = sorted({p.round for p in run.phases})
    if len(rounds) > 1:
        for path in (SAGAS, CEILING):
            lines.append(_pooled(path, [p for p in run.phases if p.path == path], len(rounds)))
    found = ratios(run.phases)
    if found:
        mean = sum(found) / len(found)
        spread = f" (range {min(found):.2f} to {max(found):.2f})" if len(found) > 1 else ""
        met = "met" if mean >= TARGET else "NOT met"
        lines.append(
            f"sagas / ceiling: {mean:.2f}{spread} over {len(found)} round(s) — "
            f"target ≥ {TARGET}: {met}"
        )
    by_path: dict[str, set[str]] = {}
    for phase in run.phases:
        by_path.setdefault(phase.path, set()).add(_writes(phase))
    if len(by_path) == 2 and by_path[SAGAS] != by_path[CEILING]:
        lines.append("WARNING: the two paths made different Directus writes per order")
    return lines


def failed(run: SagaRun) -> bool:
    """Whether any order failed, or any saga ended otherwise than COMPLETED."""
    return any(
        p.errors
        or p.finished != p.orders
        or set(p.outcomes) - {"COMPLETED"}
        or set(p.statuses) - {"COMPLETED"}
        for p in run.phases
    )


def run_saga(
    settings: DevSettings,
    *,
    sagas: int,
    concurrency: int,
    lines: int,
    workers: int,
    products: int,
    rounds: int,
) -> int:
    """``mesh bench saga``: print the figures; return the exit code (1 on any error)."""
    print(
        f"saga: {sagas} place-order sagas of {lines} line(s) (products drawn from {products}, "
        f"1 to {MAX_UNITS} units), {concurrency} in flight, {workers} worker(s), {rounds} "
        f"round(s) against the ceiling: the same orders' Directus requests sent directly "
        "(the saga's own steps without the engine). The load client runs in this process, "
        "on the same cores as the workers, Directus and Postgres.",
        flush=True,
    )
    bench = SagaBench(
        settings, sagas=sagas, concurrency=concurrency, lines=lines, workers=workers,
        products=products, rounds=rounds,
    )  # fmt: skip
    run = asyncio.run(bench.measure())
    print(f"set-up (services, data, warm-up of {run.warmup} orders per path): {run.setup_s:.0f} s")
    print("\n".join(report(run)))
    return 1 if failed(run) else 0
