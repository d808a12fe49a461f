"""Worker CPU per GraphQL answer: the planned executor against graphql-core's, A/B on two
real workers side by side.

    python -m tests.graphql.plan_cpu [--blocks 6] [--nested 50] [--by-id 500] [--seconds 4]
                                     [--today DIR]

A broker and registry of its own (4 partitions per topic) and two ``python -m mesh worker``
processes, each the only worker of its own fleet (its own consumer group, so it owns every
partition and reads every key locally, as ``mesh bench graphql``'s one-worker fleet): one
with ``MESH_GRAPHQL_PLAN=false`` (graphql-core executes every query), one planned. Both
fold the same events, the bench's: 100 customers, 10 products and, for customer 1, 20
invoices of 5 items. Then, per scenario, blocks of requests go to one worker and to the
other in turn (``--blocks`` each, 4 in flight), so both are measured under the same load of
a shared machine, and each worker's CPU time (``/proc/<pid>/stat``, user + system; the
client's own CPU is not counted) over its blocks, less what it uses idle over the same
time (measured before), is divided by its requests:

* the baseline: ``POST /api/v1/whoami``, the cheapest request through the same gate and web
  stack (what ``mesh bench graphql`` measures GraphQL against; not on a revision without
  it);
* by id uncached: ``customer(id: $random) { id name email }`` with ``Cache-Control:
  no-cache``;
* nested uncached: the README's nested query (20 invoices, 100 items, their products).

Then requests/s of the baseline and of by id uncached with 32 in flight for ``--seconds``
on each worker in turn (the load client runs here, on the same cores, as the bench's).
Every request carries the tests' bearer token (authentication on, every scope a field
policy names); logs at warning.

``--today DIR`` adds a third worker running another revision of the product, measured the
same way: ``DIR`` holds its ``mesh`` package (with ``agents``, ``tables``, ``config`` and
``schemas`` beside it), e.g. the revision before the planned executor::

    git archive 835f884 mesh agents tables config schemas | tar -x -C DIR
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from mesh.domain import load_domain
from mesh.sources.events import Op
from tests.support.auth import bearer
from tests.support.fleet import Fleet, customer, invoice, invoice_item, open_fleet, product
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker, wait_stable

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS, PRODUCTS, INVOICES, ITEMS = 100, 10, 20, 5
BY_ID = "query ($id: ID!) { customer(id: $id) { id name email } }"
NESTED = """{ customer(id: "1") { id name email invoices { id number status
    items { quantity product { sku name price } } } } }"""
NO_CACHE = {"Cache-Control": "no-cache", "Content-Type": "application/json", **bearer()}
BASELINE_PATH = "/api/v1/whoami"
IN_FLIGHT = 4
SCENARIOS = ("baseline", "by id uncached", "nested uncached")

Send = Callable[[aiohttp.ClientSession, random.Random], Awaitable[None]]
Figures = dict[tuple[str, str], float]
"""By (scenario, executor)."""


def cpu_seconds(worker: MeshWorker) -> float:
    """User + system CPU time of the worker's process so far."""
    assert worker.proc is not None
    fields = Path(f"/proc/{worker.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(fleet: Fleet) -> None:
    """The bench's entities."""
    position = 0
    for pid in range(1, PRODUCTS + 1):
        position += 1
        await fleet.send("product", pid, position, product(f"sku-{pid}", f"{pid}.50"), Op.CREATE)
    for cid in range(1, CUSTOMERS + 1):
        position += 1
        await fleet.send("customer", cid, position, customer(f"Customer{cid}"), Op.CREATE)
    for i in range(1, INVOICES + 1):
        position += 1
        await fleet.send("invoice", i, position, invoice(f"INV-{i:04d}", 1), Op.CREATE)
        for n in range(ITEMS):
            position += 1
            item = invoice_item(i, (i + n) % PRODUCTS + 1, n + 1)
            await fleet.send("invoice_item", i * 100 + n, position, item, Op.CREATE)


async def folded(worker: MeshWorker) -> None:
    """Wait until the nested query shows every item's product on ``worker``."""

    async def complete() -> bool:
        try:
            async with aiohttp.ClientSession() as http:
                body = await graphql(http, worker, NESTED)
        except AssertionError:  # not folded yet
            return False
        invoices = body["data"]["customer"]["invoices"]
        items = [item for inv in invoices for item in inv["items"] if item["product"]]
        return len(items) == INVOICES * ITEMS

    await wait_until(complete, timeout=120, what=f"the entities on {worker.name}")


async def graphql(
    http: aiohttp.ClientSession, worker: MeshWorker, query: str, variables: Any = None
) -> Any:
    """An executed answer (``no-cache``); ``AssertionError`` unless 200 without errors."""
    body = json.dumps({"query": query, "variables": variables})
    async with http.post(f"{worker.base}/graphql", data=body, headers=NO_CACHE) as resp:
        answer = await resp.json()
        if resp.status != 200 or answer.get("errors"):
            raise AssertionError(f"{query}: {resp.status} {answer}")
        return answer


def scenarios(worker: MeshWorker) -> dict[str, Send]:
    """What is measured: name → one request to ``worker``."""

    async def baseline(http: aiohttp.ClientSession, rng: random.Random) -> None:
        async with http.post(worker.base + BASELINE_PATH, data=b"{}", headers=NO_CACHE) as r:
            await r.read()
            assert r.status == 200, r.status

    async def by_id(http: aiohttp.ClientSession, rng: random.Random) -> None:
        await graphql(http, worker, BY_ID, {"id": str(rng.randint(1, CUSTOMERS))})

    async def nested(http: aiohttp.ClientSession, rng: random.Random) -> None:
        await graphql(http, worker, NESTED)

    return {"baseline": baseline, "by id uncached": by_id, "nested uncached": nested}


async def idle_rates(workers: list[MeshWorker], seconds: float = 4.0) -> list[float]:
    """Each worker's CPU seconds per second without requests (timers, consumer loop)."""
    before, began = [cpu_seconds(w) for w in workers], time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - began
    return [(cpu_seconds(w) - b) / wall for w, b in zip(workers, before, strict=True)]


async def block(
    worker: MeshWorker, send: Send, requests: int, rng: random.Random
) -> tuple[float, float]:
    """Send ``requests`` (``IN_FLIGHT`` at a time): the worker's CPU seconds and the wall
    seconds they took."""
    async with aiohttp.ClientSession() as http:

        async def client() -> None:
            for _ in range(requests // IN_FLIGHT):
                await send(http, rng)

        cpu, began = cpu_seconds(worker), time.monotonic()
        await asyncio.gather(*(client() for _ in range(IN_FLIGHT)))
        return cpu_seconds(worker) - cpu, time.monotonic() - began


async def rate(worker: MeshWorker, send: Send, seconds: float, concurrency: int = 32) -> float:
    """Requests/s with ``concurrency`` in flight over ``seconds`` (after a 1 s warm-up)."""
    done, counting = 0, False

    async def client(n: int, http: aiohttp.ClientSession, until: float) -> None:
        nonlocal done
        rng = random.Random(n)
        while time.monotonic() < until:
            await send(http, rng)
            done += counting

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        until = time.monotonic() + 1 + seconds
        clients = [asyncio.create_task(client(n, http, until)) for n in range(concurrency)]
        await asyncio.sleep(1)
        counting, began = True, time.monotonic()
        await asyncio.gather(*clients)
        return done / (time.monotonic() - began)


def other_worker(fleet: Fleet, root: Path, name: str, env: dict[str, str]) -> MeshWorker:
    """A worker (not started) of a fleet of its own on the same broker as ``fleet``'s, with
    ``env`` added to the same settings."""
    first = fleet.workers[0]
    own = ("MESH_APP_ID", "MESH_WORKER_NAME", "MESH_STATE_DIR", "MESH_WEB_PORT")
    base = {k: v for k, v in first.env.items() if k not in own}
    return MeshWorker(
        name, app_id=f"plan-cpu-{name}", state_dir=root / "state" / name,
        log_dir=root / "logs", env={**base, **env},
    )  # fmt: skip


async def start_in(worker: MeshWorker, tree: Path | None) -> None:
    """Start ``worker`` running the ``mesh`` package of ``tree`` (``None``: this one)."""
    if tree is None:
        await worker.start()
        return
    # ``python -m mesh`` looks in its working directory first, then PYTHONPATH.
    worker.env["PYTHONPATH"] = str(tree)
    here = Path.cwd()
    os.chdir(tree)
    try:
        await worker.start()
    finally:
        os.chdir(here)


async def measure(args: argparse.Namespace, root: Path) -> None:
    domain = load_domain(PROJECT_ROOT / "config" / "domain.yaml")
    env = {"MESH_LOG_LEVEL": "warning"}
    async with (
        open_fleet(domain, root, "plan-cpu", 4, ["planned"], env) as fleet,
        contextlib.AsyncExitStack() as cleanup,
    ):
        await load(fleet)
        others = {
            "graphql-core": (
                other_worker(fleet, root, "general", {"MESH_GRAPHQL_PLAN": "false"}),
                None,
            )
        }
        if args.today is not None:
            others["today"] = (other_worker(fleet, root, "today", {}), args.today.resolve())
        for worker, tree in others.values():
            await start_in(worker, tree)
            cleanup.push_async_callback(worker.stop)
        await wait_stable([worker for worker, _ in others.values()])
        workers = {name: worker for name, (worker, _) in others.items()}
        workers["planned"] = fleet.workers[0]
        executors = tuple(workers)
        for worker in workers.values():
            await folded(worker)
        idle = dict(zip(workers, await idle_rates(list(workers.values())), strict=True))
        print("idle: " + ", ".join(f"{e} uses {idle[e]:.1%} of a core" for e in executors))
        sizes = {"baseline": args.by_id, "by id uncached": args.by_id,
                 "nested uncached": args.nested}  # fmt: skip
        cpu: Figures = {}
        for name in SCENARIOS:
            # The other revision may have no baseline route.
            measured = tuple(e for e in executors if name != "baseline" or e != "today")
            used = dict.fromkeys(measured, 0.0)
            wall = dict.fromkeys(measured, 0.0)
            rng = random.Random(1)
            for executor in measured:  # warm-up
                worker = workers[executor]
                await block(worker, scenarios(worker)[name], sizes[name] // 2, rng)
            for n in range(args.blocks):
                order = measured if n % 2 == 0 else measured[::-1]
                for executor in order:
                    worker = workers[executor]
                    spent, took = await block(worker, scenarios(worker)[name], sizes[name], rng)
                    used[executor] += spent
                    wall[executor] += took
            for executor in measured:
                net = used[executor] - idle[executor] * wall[executor]
                cpu[name, executor] = net * 1e6 / (args.blocks * sizes[name])
        rates: Figures = {}
        for name in ("baseline", "by id uncached"):
            for executor in executors:
                if (name, executor) not in cpu:
                    continue
                worker = workers[executor]
                rates[name, executor] = await rate(worker, scenarios(worker)[name], args.seconds)
        report(executors, cpu, rates)


def report(
    executors: tuple[str, ...],
    cpu: dict[tuple[str, str], float],
    rates: dict[tuple[str, str], float],
) -> None:
    """The figures and their ratios (the planned executor's to each other's)."""
    others = [e for e in executors if e != "planned"]
    print("\nworker CPU per request, µs:")
    print(f"  {'scenario':<18}" + "".join(f"{e:>14}" for e in executors)
          + "".join(f"{'planned / ' + e:>26}" for e in others))  # fmt: skip
    for name in SCENARIOS:
        planned = cpu[name, "planned"]
        figures = [f"{cpu[name, e]:>14,.0f}" if (name, e) in cpu else f"{'n/a':>14}"
                   for e in executors]  # fmt: skip
        ratios = [f"{planned / cpu[name, e]:>26.3f}" if (name, e) in cpu else f"{'':>26}"
                  for e in others]  # fmt: skip
        print(f"  {name:<18}" + "".join(figures) + "".join(ratios))
    print("\nby id uncached against the baseline:")
    for executor in executors:
        if ("baseline", executor) not in cpu:
            continue
        share = cpu["baseline", executor] / cpu["by id uncached", executor]
        by_id, baseline = rates["by id uncached", executor], rates["baseline", executor]
        print(f"  {executor:<14} CPU: {share:.2f} of the baseline's requests per CPU second; "
              f"32 in flight: {by_id:,.0f}/s, {by_id / baseline:.2f} of the baseline's "
              f"{baseline:,.0f}/s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=6, help="blocks per worker and scenario")
    parser.add_argument("--nested", type=int, default=50, help="nested requests per block")
    parser.add_argument("--by-id", type=int, default=500, help="by-id and baseline requests")
    parser.add_argument("--seconds", type=float, default=4.0, help="each requests/s window")
    parser.add_argument("--today", type=Path, help="another revision's tree, measured too")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="dictamesh-plan-cpu-") as root,
        contextlib.suppress(KeyboardInterrupt),
    ):
        asyncio.run(measure(args, Path(root)))


if __name__ == "__main__":
    main()
