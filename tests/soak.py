"""``make soak``: run the crash and rebalance tests again and again, each from a fresh stack.

A crash test that passes 9 times in 10 is a failing test, and some races show only on a
stack's first rebalances, so every run is its own pytest process: a fresh broker, schema
registry, Directus database, worker state and app id. Failed runs keep their directory
(worker logs, and for the scale-out scenario every record the broker held) and are named
in the summary.

    python -m tests.soak [--runs N] [--only NAME]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Scenario:
    name: str
    test: str
    runs: int
    env: tuple[tuple[str, str], ...] = ()
    """Added to the pytest process's environment."""


SCENARIOS = [
    Scenario("scale-out", "tests/catalog/test_scale_out.py", 20),
    Scenario("takeover", "tests/catalog/test_takeover.py", 10),
    Scenario("convergence", "tests/catalog/test_convergence.py", 10),
    Scenario("rolling-restart", "tests/catalog/test_rolling_restart.py", 10),
    Scenario("graceful-stop", "tests/mirror/test_graceful_stop.py", 10),
    Scenario("standby-reads", "tests/catalog/test_standby_reads.py", 10),
    Scenario(
        "rebuild",
        "tests/catalog/test_rest.py::test_wiped_local_state_is_recovered_from_the_changelog",
        10,
    ),
    Scenario(
        "kafka-recreated",
        "tests/cache/test_generation.py::"
        "test_a_recreated_kafka_never_answers_from_the_earlier_generations_cache",
        10,
    ),
    # A reader frozen (SIGSTOP) while its lease holder writes: writes wait a lease, no stale hit.
    Scenario("cache-leases", "tests/graphql/test_cache_leases.py", 10),
    # Readers racing a stream of renames, on each cache fleet (Redis, peers' pushes, one worker).
    Scenario(
        "cache-races",
        "tests/graphql/test_cache.py::test_queries_racing_a_stream_of_changes_never_go_back",
        10,
    ),
    # A peer SIGKILLed under GraphQL reads on links.
    Scenario(
        "links",
        "tests/graphql/test_links.py::"
        "test_graphql_reads_other_workers_on_links_and_survives_one_dying",
        10,
    ),
    # Every saga crash point (tests/sagas/test_crashes.py: MESH_SAGA_CRASH_MATRIX=all).
    Scenario("sagas", "tests/sagas/test_crashes.py", 10, (("MESH_SAGA_CRASH_MATRIX", "all"),)),
    Scenario(
        "saga-races",
        "tests/sagas/test_place_order.py::test_orders_racing_for_the_last_units_never_oversell",
        10,
    ),
    # The isolation matrix's long form: more fleet shapes (see tests/tenancy/).
    Scenario("tenancy", "tests/tenancy/test_isolation.py", 3, (("MESH_TENANCY_LONG", "1"),)),
]


def run_once(scenario: Scenario, n: int, root: Path) -> tuple[bool, float, Path]:
    """One pytest process; returns (passed, seconds, its directory)."""
    where = root / f"{scenario.name}-{n:02d}"
    env = {**os.environ, "MESH_SOAK_SEED": str(1000 + n), **dict(scenario.env)}
    started = time.monotonic()
    with (where.with_suffix(".log")).open("w") as log:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", scenario.test, "-x", "-q", f"--basetemp={where}"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    return result.returncode == 0, time.monotonic() - started, where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per scenario (default: its own)"
    )
    parser.add_argument("--only", choices=[s.name for s in SCENARIOS], action="append")
    parser.add_argument("--dir", type=Path, default=PROJECT_ROOT / ".state" / "soak")
    args = parser.parse_args(argv)
    root: Path = args.dir
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    failed: list[str] = []
    summary: list[str] = []
    for scenario in SCENARIOS:
        if args.only and scenario.name not in args.only:
            continue
        runs = args.runs or scenario.runs
        passed = 0
        for n in range(1, runs + 1):
            ok, seconds, where = run_once(scenario, n, root)
            passed += ok
            verdict = "passed" if ok else f"FAILED (log {where.with_suffix('.log')}, files {where})"
            print(f"{scenario.name} run {n}/{runs}: {verdict} in {seconds:.0f} s", flush=True)
            if ok:
                shutil.rmtree(where, ignore_errors=True)
                where.with_suffix(".log").unlink()
            else:
                failed.append(f"{scenario.name} run {n}")
        summary.append(f"{scenario.name}: {passed} of {runs} runs passed")
    print("\n".join(["soak summary:", *summary]), flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
