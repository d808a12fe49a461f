"""The measuring of ``mesh bench saga``: both paths warmed up, then each pass of one path
over the orders (:class:`~mesh_tooling.bench.saga.model.Phase`), the sagas' completion
seen in their transition events and their time split into its parts (:func:`timeline`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import SecretStr

from mesh.codec import AvroEventCodec, RegistryClient
from mesh.errors import StackError
from mesh.retry import RetryPolicy
from mesh.sagas.events import SAGA_CHANGED_SCHEMA, SAGA_CHANGED_TOPIC
from mesh.sagas.ids import saga_id
from mesh.sources.directus.client import DirectusAuth
from mesh_tooling.bench.saga.ceiling import DirectSagas
from mesh_tooling.bench.saga.counting import CountingDirectus, activity_head, logged_writes
from mesh_tooling.bench.saga.cpu import CpuMeter
from mesh_tooling.bench.saga.fleet import SagaFleet
from mesh_tooling.bench.saga.model import (
    BETWEEN,
    CEILING,
    PLACED,
    SAGA_TYPE,
    SAGAS,
    SEEN,
    Order,
    Phase,
    SagaRun,
    make_orders,
    say,
)
from mesh_tooling.settings import DevSettings

FINAL = ("COMPLETED", "COMPENSATED", "FAILED_COMPENSATION")
FINAL_WAIT_S = 120.0
"""A saga not final this long after it was placed counts as an error."""
PLACE = "mutation ($input: PlaceOrderInput!) { placeOrder(input: $input) { id status } }"
STATUS = "query ($id: ID!) { saga(id: $id) { status error } }"
HISTORY = "query ($id: ID!) { saga(id: $id) { status history { at event step } } }"


class _Finals:
    """Final transitions of sagas from ``sagas.dictamesh.saga_changed``, as they arrive."""

    def __init__(self, codec: AvroEventCodec) -> None:
        self.codec = codec
        self.waiting: dict[str, asyncio.Future[tuple[str, float, float]]] = {}

    def expect(self, sid: str) -> asyncio.Future[tuple[str, float, float]]:
        """The saga's final event and when it was received (``perf_counter``, Unix)."""
        future = self.waiting.get(sid)
        if future is None:
            future = self.waiting[sid] = asyncio.get_running_loop().create_future()
        return future

    async def consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            now, unix = time.perf_counter(), time.time()
            for messages in batch.values():
                for message in messages:
                    event = self.codec.loads(message.value)
                    if event["event"] in FINAL:
                        future = self.expect(event["saga_id"])
                        if not future.done():
                            future.set_result((event["event"], now, unix))


def timeline(
    history: list[dict[str, Any]], sent: float, seen: float
) -> tuple[dict[str, float], list[float]]:
    """Where one saga's time went, in ms, from its history (Unix ``at`` of each
    transition) and the Unix times it was placed and seen final: :data:`PLACED`; each step,
    from its ``STEP_STARTED`` being recorded to the next transition (that transition
    persisted and published, then the action), a failed attempt's wait before the next
    included; :data:`BETWEEN`, the other intervals, each a transition recorded, persisted
    and published before the next step starts (also returned one by one); and
    :data:`SEEN`, the final transition recorded, persisted, published and received."""
    parts = {PLACED: (history[0]["at"] - sent) * 1000, BETWEEN: 0.0}
    gaps = []
    for a, b in itertools.pairwise(history):
        ms = (b["at"] - a["at"]) * 1000
        retry = a["event"] == "STEP_FAILED" and b["event"] == "STEP_STARTED"
        if a["event"] == "STEP_STARTED" or (retry and a["step"] == b["step"]):
            parts[a["step"]] = parts.get(a["step"], 0.0) + ms
        else:
            parts[BETWEEN] += ms
            gaps.append(ms)
    parts[SEEN] = (seen - history[-1]["at"]) * 1000
    return parts, gaps


class SagaBench(SagaFleet):
    """One run: services, its customers and products, warm-up, then the rounds."""

    def __init__(
        self,
        settings: DevSettings,
        *,
        sagas: int = 120,
        concurrency: int = 8,
        lines: int = 2,
        workers: int = 2,
        products: int = 50,
        customers: int = 10,
        rounds: int = 2,
        warmup: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            settings, workers=workers, products=products, customers=customers, seed=seed
        )
        if not 1 <= lines <= products:
            raise StackError(f"--lines must be 1 to --products ({products}), got {lines}")
        self.sagas = sagas
        self.concurrency = concurrency
        self.lines = lines
        self.rounds = rounds
        self.warmup = min(sagas, 2 * concurrency) if warmup is None else warmup
        self.finals: _Finals | None = None
        self.direct: DirectSagas | None = None

    async def _measure(
        self, phase: Phase, each: Callable[[int], Awaitable[None]], count: int
    ) -> None:
        """Run ``each(n)`` for ``n`` in ``range(count)`` with ``concurrency`` in flight,
        metering CPU and the Directus writes."""
        assert self.admin is not None
        admin = self.admin
        meter = CpuMeter(self._groups)
        head = await activity_head(admin)
        indices = iter(range(count))

        async def client() -> None:
            for n in indices:
                await each(n)

        sample = meter.start()
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(self.concurrency)))
        phase.seconds = time.perf_counter() - started
        phase.cpu_s, phase.other_cpu_s = meter.stop(sample)
        await asyncio.sleep(0.5)  # the last writes' activity rows
        phase.writes = await logged_writes(admin, self.saga_user, head, await activity_head(admin))

    async def _place(self, order: Order, key: str) -> str:
        """``placeOrder``; the saga's id."""
        answer = await self._graphql(PLACE, {"input": {**order.as_input(), "idempotencyKey": key}})
        if answer.get("errors") or not answer.get("data"):
            raise StackError(f"placeOrder: {json.dumps(answer)[:300]}")
        return str(answer["data"]["placeOrder"]["id"])

    async def _sagas_pass(self, orders: list[Order], round_: int) -> Phase:
        """The orders through the engine, completion times from the transition events."""
        assert self.finals is not None
        finals = self.finals
        phase = Phase(SAGAS, round_, len(orders))
        keys = [f"bench-{self.run_id}-{round_}-{n}" for n in range(len(orders))]
        ids = [saga_id(self.tenant, SAGA_TYPE, key) for key in keys]

        times: dict[str, tuple[float, float]] = {}  # Unix times: placed, seen final

        async def each(n: int) -> None:
            final = finals.expect(ids[n])  # before the saga can end
            sent, sent_unix = time.perf_counter(), time.time()
            try:
                sid = await self._place(orders[n], keys[n])
                if sid != ids[n]:
                    raise StackError(f"placeOrder answered saga {sid}, expected {ids[n]}")
                status, at, at_unix = await asyncio.wait_for(final, FINAL_WAIT_S)
            except (StackError, aiohttp.ClientError, TimeoutError) as exc:
                phase.fail(f"{type(exc).__name__}: {exc}")
                return
            phase.latencies_ms.append((at - sent) * 1000)
            phase.outcomes[status] += 1
            times[ids[n]] = (sent_unix, at_unix)

        await self._measure(phase, each, len(orders))
        await self._read_back(phase, ids, times)
        return phase

    async def _read_back(
        self, phase: Phase, ids: list[str], times: dict[str, tuple[float, float]]
    ) -> None:
        """Each saga's status and history as GraphQL ``saga(id)`` answers them: the
        statuses, and where the time of the sagas seen final went."""
        pending = iter(ids)

        async def client() -> None:
            for sid in pending:
                answer = await self._graphql(HISTORY, {"id": sid})
                saga = (answer.get("data") or {}).get("saga")
                phase.statuses[saga["status"] if saga else "MISSING"] += 1
                if saga and sid in times and saga["history"]:
                    parts, gaps = timeline(saga["history"], *times[sid])
                    for part, ms in parts.items():
                        phase.parts_ms.setdefault(part, []).append(ms)
                    phase.transitions_ms.extend(gaps)

        await asyncio.gather(*(client() for _ in range(self.concurrency)))

    async def _ceiling_pass(self, orders: list[Order], round_: int) -> Phase:
        """The same orders' Directus requests, sent directly."""
        assert self.direct is not None
        direct = self.direct
        phase = Phase(CEILING, round_, len(orders))
        before = Counter(direct.client.calls)

        async def each(n: int) -> None:
            started = time.perf_counter()
            try:
                took = await direct.place(orders[n])
            except Exception as exc:  # counted and shown; the run goes on
                phase.fail(f"{type(exc).__name__}: {exc}")
                return
            phase.latencies_ms.append((time.perf_counter() - started) * 1000)
            phase.outcomes["COMPLETED"] += 1
            for step, ms in took.items():
                phase.parts_ms.setdefault(step, []).append(ms)

        await self._measure(phase, each, len(orders))
        phase.requests = direct.client.calls - before
        return phase

    async def _warm_up(self, orders: list[Order]) -> None:
        """Both paths once over ``orders`` (sagas polled through GraphQL: the transition
        topic exists only once a saga has published on it)."""
        pending = iter(range(len(orders)))

        async def client() -> None:
            for n in pending:
                sid = await self._place(orders[n], f"bench-{self.run_id}-warm-{n}")
                deadline = time.monotonic() + FINAL_WAIT_S
                while time.monotonic() < deadline:
                    answer = await self._graphql(STATUS, {"id": sid})
                    saga = (answer.get("data") or {}).get("saga") or {}
                    if saga.get("status") in FINAL:
                        if saga["status"] != "COMPLETED":
                            raise StackError(f"warm-up saga {sid} ended {saga}")
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise StackError(f"warm-up saga {sid} did not end in {FINAL_WAIT_S:.0f} s")

        await asyncio.gather(*(client() for _ in range(self.concurrency)))
        assert self.direct is not None
        direct = self.direct
        again = iter(range(len(orders)))

        async def direct_client() -> None:
            for n in again:
                await direct.place(orders[n])

        await asyncio.gather(*(direct_client() for _ in range(self.concurrency)))

    async def _follow_finals(self, cleanup: contextlib.AsyncExitStack) -> None:
        """Consume the transition topic from its end, from now on."""
        codec = AvroEventCodec(
            RegistryClient(self.registry_url), f"{SAGA_CHANGED_TOPIC}-value", SAGA_CHANGED_SCHEMA
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
        )
        await consumer.start()
        cleanup.push_async_callback(consumer.stop)
        if SAGA_CHANGED_TOPIC not in await consumer.topics():
            raise StackError(f"no topic {SAGA_CHANGED_TOPIC} after the warm-up's sagas")
        partitions = consumer.partitions_for_topic(SAGA_CHANGED_TOPIC) or {0}
        tps = [TopicPartition(SAGA_CHANGED_TOPIC, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        self.finals = _Finals(codec)
        task = asyncio.create_task(self.finals.consume(consumer))

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        cleanup.push_async_callback(stop)

    async def measure(self) -> SagaRun:
        """Start everything, measure, stop everything and clean up."""
        started = time.monotonic()
        logging.getLogger("aiokafka").setLevel(logging.WARNING)  # its consumer's chatter
        try:
            async with contextlib.AsyncExitStack() as cleanup:
                target, http = await self._start(cleanup)
                assert self.admin is not None
                customers, products, prices = await self._make_data(self.admin)
                say(f"made {len(customers)} customers and {len(products)} products; waiting "
                    "for the catalog")  # fmt: skip
                await self._wait_catalog(customers, products)
                client = CountingDirectus(
                    target.url, DirectusAuth.static(SecretStr(target.saga_token)),
                    timeout_s=self.source.request_timeout_s, retry=RetryPolicy(0.1, 1.0),
                    max_attempts=1, session=http,
                )  # fmt: skip
                self.direct = DirectSagas(client, self.tenant, prices)
                say(f"warm-up: {self.warmup} orders through each path")
                await self._warm_up(make_orders(self.warmup, self.lines, customers, products, -1))
                await self._follow_finals(cleanup)
                setup_s = time.monotonic() - started
                phases = []
                for r in range(1, self.rounds + 1):
                    orders = make_orders(self.sagas, self.lines, customers, products, self.seed + r)
                    paths = (CEILING, SAGAS) if r % 2 else (SAGAS, CEILING)
                    for path in paths:
                        say(f"round {r} of {self.rounds}: {path}, {self.sagas} orders")
                        measure = self._ceiling_pass if path == CEILING else self._sagas_pass
                        phases.append(await measure(orders, r))
                return SagaRun(
                    self.sagas, self.concurrency, self.lines, self.worker_count,
                    self.product_count, phases, self.warmup, setup_s,
                )  # fmt: skip
        finally:
            await self._stop()
