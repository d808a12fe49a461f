"""``mesh bench graphql`` with tiny numbers: it runs, cleans up and reports sane figures.

Two-worker fleets (the ones whose reads cross workers) in the production configuration,
without and with a real Redis in one run, each against its own baseline, whose requests
go through the same gate (a GraphQL request and a baseline request without a token are
refused); then a fleet in the dev configuration with the load from a separate process and
only the nested uncached query at 8 in flight; the load generator on its own against a
server checking its fleet signatures, in this process and from a separate one; the
targets; the options' checks; then the ``--tracing`` scenarios, one round.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from mesh_tooling.bench.graphql import (
    BASELINE,
    GraphQLBench,
    Scenario,
    redis_choice,
    report,
    run_graphql,
    target,
    tracing_report,
)
from mesh_tooling.bench.ingest import TRACING_MODES
from mesh_tooling.bench.load import LoadResult, LoadSpec, run_load
from mesh_tooling.dev.process import ManagedProcess, free_port
from pydantic import SecretStr

from mesh.settings import Settings
from mesh.web.auth import WHOAMI_PATH

QUERIES = [("by-id", True), ("by-id", False), ("nested", True), ("nested", False)]
ROWS = [(BASELINE, False), *QUERIES]


class Probing(GraphQLBench):
    """Before measuring a fleet, asks it without credentials: the gate must refuse both."""

    refusals: list[int]

    async def _measure(
        self, urls: list[str], procs: list[ManagedProcess], **options: Any
    ) -> list[Scenario]:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{urls[0]}/graphql", json={"query": "{ __typename }"}) as r:
                self.refusals.append(r.status)
            async with http.post(urls[0] + WHOAMI_PATH, data=b"{}") as r:
                self.refusals.append(r.status)
        return await super()._measure(urls, procs, **options)


def _sane(s: Scenario) -> None:
    assert s.load.errors == 0, s.load.first_error  # with auth on: the credentials passed
    assert s.load.requests > 0
    assert 0 < s.load.p50_ms <= s.load.p99_ms
    assert len(s.load.per_target) == s.workers  # every worker answered
    for share in (s.load_cpu, s.worker_cpu, s.other_cpu):
        assert share is not None
        assert 0.0 <= share <= 1.0
    assert s.load_cpu > 0  # the load generator's CPU in the window was measured
    assert s.cpu_us is not None
    assert s.cpu_us > 0


def _fields(row: str) -> list[str]:
    """A table row's columns after the scenario's name: workers, redis, requests/s, per
    worker, p50, p99, ratio, µs/request, CPU shares (workers, load, other), target."""
    return row[16:].split()


async def test_production_configuration_with_and_without_redis(redis_url: str) -> None:
    bench = Probing(Settings(), customers=20, concurrency=4, duration=0.5, warmup=0.2)
    bench.refusals = []
    scenarios = await bench.run_scenarios(
        worker_counts=(2,), auth_rounds=1, redis=(None, redis_url)
    )
    fleets, ab = scenarios[:-2], scenarios[-2:]
    assert [(s.query, s.cached, s.workers, s.redis) for s in fleets] == [
        (q, c, 2, redis) for redis in (False, True) for q, c in ROWS
    ]
    assert [(s.query, s.auth) for s in ab] == [("auth-a/b", False), ("auth-a/b", True)]
    # Each fleet refused a GraphQL request and a baseline request without a token.
    assert bench.refusals == [401, 401, 401, 401]
    for s in scenarios:
        _sane(s)
        assert s.load_process == "bench"
    assert all(s.production and s.auth for s in fleets)
    # Tracing was on at the default sampler: each fleet exported spans to the sink.
    assert [s.spans > 0 for s in fleets if s.query == BASELINE] == [True, True]
    env = bench.production_env()
    assert env["MESH_AUTH"] == "jwt"
    assert env["MESH_LOG_LEVEL"] == "info"  # audit lines written
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == bench.sink_url
    if "OTEL_TRACES_SAMPLER" not in os.environ:
        assert "OTEL_TRACES_SAMPLER" not in env  # the product's default sampler

    lines = report(scenarios)
    assert lines[0].startswith("load generated in this (the bench's) process, 4 requests")
    assert lines[1].split()[:4] == ["scenario", "workers", "redis", "requests/s"]
    rows = lines[2:12]
    for row, s in zip(rows, fleets, strict=True):
        assert row[:16].strip() == s.name
        fields = _fields(row)
        assert fields[:2] == ["2", "on" if s.redis else "off"]
        assert fields[2] == f"{s.load.per_s:,.0f}"
        assert fields[3] == f"{s.load.per_s / 2:,.0f}"
        baseline = next(b for b in fleets if b.query == BASELINE and b.redis == s.redis)
        assert fields[6] == f"{s.load.per_s / baseline.load.per_s:.2f}"  # its own baseline
        assert fields[9] == f"{s.load_cpu:.2f}"
    for n in (0, 5):  # per configuration
        assert len(_fields(rows[n])) == 11  # the baselines and by id uncached: no target
        assert len(_fields(rows[n + 2])) == 11
        assert rows[n + 1].endswith(("≥ 0.8: met", "≥ 0.8: not met"))
        assert rows[n + 3].endswith(("≥ 0.5: met", "≥ 0.5: not met"))
        assert "≥ 0.05 (p99 ≤ 50 ms: at --concurrency 8): " in rows[n + 4]
    notes = lines[12:-3]
    assert notes[0].startswith("  baseline, 2 worker(s), Redis off: requests/s per worker process:")
    traced = [n.split(":")[0] for n in notes if "spans exported to the OTLP sink" in n]
    assert traced == ["  2 worker(s), Redis off", "  2 worker(s), Redis on"]
    assert lines[-3].startswith("by-id    cached   1 worker(s), auth off:")
    assert lines[-2].startswith("by-id    cached   1 worker(s), auth on :")
    assert lines[-1].startswith("authentication on / off, by id cached, mean of 1 alternated runs:")
    assert not bench.root.exists()  # the scratch directory is gone


async def test_dev_configuration_separate_load_process_nested_uncached_only() -> None:
    bench = Probing(Settings(), customers=20, concurrency=8, duration=0.5, warmup=0.2,
                    production=False, load_process="separate")  # fmt: skip
    bench.refusals = []
    scenarios = await bench.run_scenarios(
        worker_counts=(2,), auth_rounds=0, redis=(None,), only=["nested-uncached"]
    )
    assert [(s.query, s.cached, s.workers, s.redis) for s in scenarios] == [
        (BASELINE, False, 2, False), ("nested", False, 2, False),
    ]  # fmt: skip
    assert bench.refusals == [200, 200]  # authentication off: the gate lets both through
    for s in scenarios:
        _sane(s)
        assert (s.production, s.auth, s.load_process) == (False, False, "separate")
    lines = report(scenarios)
    assert lines[0].startswith("load generated in a separate process, 8 requests in flight")
    assert "≥ 0.05, p99 ≤ 50 ms: " in lines[3]  # at 8 in flight: both parts of the target
    assert not any("spans exported" in line for line in lines)
    assert not bench.root.exists()


async def test_the_load_answers_from_either_process() -> None:
    """The load generator on its own against a real server checking a bearer token (as a
    worker's gate does): the headers reach every request, and the same result comes from
    this process and from a separate one."""
    seen: list[str] = []

    async def whoami(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer t":
            return web.json_response({"error": "no token"}, status=401)
        seen.append(request.headers["Authorization"])
        return web.json_response({"subject": "bench"})

    app = web.Application()
    app.router.add_post(WHOAMI_PATH, whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}{WHOAMI_PATH}"
    try:
        for process in ("bench", "separate"):
            edges: list[str] = []
            spec = LoadSpec([url], [b"{}"], concurrency=2, warmup=0.2, duration=0.5,
                            graphql=False, headers={"Authorization": "Bearer t"})  # fmt: skip
            load = await run_load(spec, process=process, on_window=edges.append)
            assert edges == ["start", "end"]
            assert load.errors == 0, load.first_error
            assert load.requests > 0
            assert load.per_target == {url: load.requests}
            assert 0.0 < load.cpu_share <= 1.0
            assert 0.4 < load.cpu_wall_s < 1.0
            spec.headers = {}  # no token: refused
            refused = await run_load(spec, process=process)
            assert refused.requests == 0
            assert refused.first_error is not None
            assert refused.first_error.startswith("HTTP 401")
        assert seen
    finally:
        await runner.cleanup()


def test_targets_are_ratios_to_the_baseline() -> None:
    def row(query: str, cached: bool, workers: int, p99: float = 10.0, conc: int = 32) -> Scenario:
        load = LoadResult(seconds=1.0, latencies_ms=[1.0] * 98 + [p99] * 2)
        return Scenario(query, workers, load, cached, concurrency=conc)

    assert target(row("by-id", True, 2), 0.8) == ("≥ 0.8", True)
    assert target(row("by-id", True, 2), 0.79) == ("≥ 0.8", False)
    assert target(row("nested", True, 2), 0.5) == ("≥ 0.5", True)
    assert target(row("by-id", True, 1), 0.89) == ("≥ 0.9", False)
    assert target(row("by-id", False, 1), 0.7) == ("≥ 0.7", True)
    assert target(row("by-id", False, 2), 0.1) == ("", None)
    assert target(row("nested", True, 1), 0.1) == ("", None)
    assert target(row(BASELINE, False, 2), 1.0) == ("", None)
    assert target(row("nested", False, 2, p99=49.0, conc=8), 0.06) == (
        "≥ 0.05, p99 ≤ 50 ms", True,
    )  # fmt: skip
    assert target(row("nested", False, 2, p99=51.0, conc=8), 0.06)[1] is False
    assert target(row("nested", False, 2, p99=51.0, conc=32), 0.06) == (
        "≥ 0.05 (p99 ≤ 50 ms: at --concurrency 8)", True,
    )  # fmt: skip
    errored = row("by-id", True, 2)
    errored.load.errors = 1
    assert target(errored, 1.0)[1] is False


def test_redis_choice_and_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    url = "redis://127.0.0.1:6379/0"
    with_redis, without = Settings(redis_url=SecretStr(url)), Settings(redis_url=None)
    assert redis_choice(None, with_redis) == (None, url)
    assert redis_choice(None, without) == (None,)
    assert redis_choice("off", with_redis) == (None,)
    assert redis_choice("on", with_redis) == (url,)
    assert redis_choice("both", with_redis) == (None, url)
    assert redis_choice("redis://other:6380/1", without) == (None, "redis://other:6380/1")
    with pytest.raises(ValueError, match="needs a Redis"):
        redis_choice("both", without)
    assert run_graphql(without, 1, 1, 1, redis="on") == 2
    assert run_graphql(without, 1, 1, 1, only=["nested-uncached", "nested"]) == 2
    err = capsys.readouterr().err
    assert "--redis on needs a Redis" in err
    assert "--only: unknown nested; known: by-id-cached" in err


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
