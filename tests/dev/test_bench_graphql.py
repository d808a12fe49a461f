"""``mesh bench graphql`` with tiny numbers: it runs, cleans up and reports sane figures.

Only the two-worker case (the one whose reads cross workers, here shared through a real
Redis) to stay short; the CLI runs one and two workers with the same code. Then the
``--tracing`` scenarios, one round.
"""

from __future__ import annotations

import pytest
from mesh_tooling.bench.graphql import GraphQLBench, report, tracing_report
from mesh_tooling.bench.ingest import TRACING_MODES
from pydantic import SecretStr

from mesh.settings import Settings


async def test_the_bench_reports_positive_figures_without_errors(redis_url: str) -> None:
    settings = Settings(redis_url=SecretStr(redis_url))
    bench = GraphQLBench(settings, customers=20, concurrency=4, duration=0.5, warmup=0.2)
    scenarios = await bench.run_scenarios(worker_counts=(2,), auth_rounds=1)
    assert [(s.query, s.workers, s.cached, s.auth) for s in scenarios] == [
        ("baseline", 2, False, False), ("by-id", 2, True, False), ("by-id", 2, False, False),
        ("nested", 2, True, False), ("nested", 2, False, False),
        ("auth-a/b", 1, True, False), ("auth-a/b", 1, True, True),
    ]  # fmt: skip
    for s in scenarios:
        assert s.load.errors == 0, s.load.first_error  # with auth on: the token was accepted
        assert s.load.requests > 0
        assert s.load.per_s > 0
        assert 0 < s.load.p50_ms <= s.load.p99_ms
        assert len(s.load.per_target) == s.workers  # every worker answered
    lines = report(scenarios)
    assert lines[0].startswith("baseline          2 worker(s):")
    assert lines[1].startswith("        requests/s per worker process: 127.0.0.1:")
    assert lines[2].startswith("by-id    cached   2 worker(s):")
    assert "errors 0" in lines[2]
    assert "target ≥ 6,000/s per worker at p99 ≤ 5 ms" in lines[2]
    ratio = scenarios[1].load.per_s / scenarios[0].load.per_s
    assert f"{ratio:.2f} of the baseline" in lines[2]
    assert lines[4].startswith("by-id    uncached 2 worker(s):")
    assert lines[6].startswith("nested   cached   2 worker(s):")
    assert "target p99 ≤ 50 ms" in lines[6]
    assert lines[-3].startswith("by-id    cached   1 worker(s), auth off:")
    assert lines[-2].startswith("by-id    cached   1 worker(s), auth on :")
    assert lines[-1].startswith("authentication on / off, by id cached, mean of 1 alternated runs:")
    assert not bench.root.exists()  # the scratch directory is gone


async def test_the_tracing_bench_measures_each_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    # Exports every 100 ms, so the 100 % worker's spans reach the sink within its windows.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    bench = GraphQLBench(Settings(), customers=10, concurrency=4, duration=0.5, warmup=0.2)
    scenarios = await bench.run_tracing_scenarios(rounds=1)
    queries = [("by-id", True), ("nested", True), ("nested", False)]
    assert [(s.tracing, s.query, s.cached) for s in scenarios] == [
        (mode, query, cached) for mode in TRACING_MODES for query, cached in queries
    ]
    for s in scenarios:
        assert s.load.errors == 0, s.load.first_error
        assert s.load.requests > 0
        assert 0 < s.load.p50_ms <= s.load.p99_ms
    assert all(s.spans == 0 for s in scenarios if s.tracing == "off")
    assert all(s.spans > 0 for s in scenarios if s.tracing == "100%")
    lines = tracing_report(scenarios)
    assert lines[0].startswith("by-id    cached   1 worker(s), round 1, tracing off    :")
    assert lines[2].startswith("nested   uncached 1 worker(s), round 1, tracing off    :")
    summary = lines[len(scenarios) :]
    assert [line.split(",")[0] for line in summary] == [
        f"{q} {'cached' if c else 'uncached'}" for q, c in queries for _ in range(6)
    ]
    assert "requests/s" in summary[0]
    assert "target ≥ 0.85:" in summary[1]
    assert "requests per worker CPU-second" in summary[3]
    assert not bench.root.exists()
