"""A change followed from Directus to GraphQL in traces, and the SLO metrics, on real workers.

Two workers follow the session's Directus with the mirror and Redis on and export every span
(``OTEL_TRACES_SAMPLER=always_on``) over OTLP/HTTP to a receiver started here, which decodes
the protobuf payloads (tests/support/otlp.py). A customer created in Directus must give one
trace holding the poll, its publish, the catalog's apply batch (and its cache invalidation)
and the mirror's upsert batch, each a child of the step before; a nested GraphQL query read
across both workers must give one trace holding both workers' spans.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from mesh.domain import DomainConfig
from tests.fixtures.directus import ADMIN_EMAIL, ADMIN_PASSWORD, DirectusHandle
from tests.support.auth import bearer
from tests.support.directus_admin import DirectusAdmin
from tests.support.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker, start_following_fleet

pytestmark = pytest.mark.directus

APP_ID = "traces"


@dataclass
class Traced:
    workers: list[MeshWorker]
    receiver: OtlpReceiver
    admin: DirectusAdmin
    made: list[int] = field(default_factory=list)
    """Customers made here, deleted at the end."""


@pytest_asyncio.fixture(scope="module")
async def traced(
    seeded: DirectusHandle,
    sample_domain: DomainConfig,
    registry_url: str,
    make_database: Callable[[], str],
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Traced]:
    root = tmp_path_factory.mktemp("traces")
    async with contextlib.AsyncExitStack() as cleanup:
        receiver = await cleanup.enter_async_context(otlp_receiver())
        http = await cleanup.enter_async_context(aiohttp.ClientSession())
        collections = [e.collection for e in sample_domain.entities.values()]
        admin = await DirectusAdmin.login(
            http, seeded.url, ADMIN_EMAIL, ADMIN_PASSWORD, collections
        )
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_TRACES_SAMPLER": "always_on",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "MESH_DATABASE_URL": make_database(),
            "MESH_REDIS_URL": redis_url,  # so every batch invalidates (and Redis is traced)
        }
        workers = await start_following_fleet(
            cleanup, app_id=APP_ID, root=root, names=("tr-a", "tr-b"), directus=seeded,
            registry_url=registry_url, partitions=4, env=env,
        )  # fmt: skip
        traced = Traced(workers, receiver, admin)

        async def remove() -> None:
            for item in traced.made:
                with contextlib.suppress(Exception):
                    await admin.delete("customers", item)

        cleanup.push_async_callback(remove)
        yield traced


def _child(spans: list[ReceivedSpan], parent: ReceivedSpan, name: str) -> ReceivedSpan | None:
    return next((s for s in spans if s.name == name and s.parent_id == parent.span_id), None)


async def _graphql(worker: MeshWorker, query: str, headers: dict[str, str] | None = None) -> Any:
    async with (
        aiohttp.ClientSession(headers={**bearer(), **(headers or {})}) as http,
        http.post(f"{worker.base}/graphql", json={"query": query}) as resp,
    ):
        return resp.status, await resp.json()


async def test_a_directus_change_is_one_trace_from_poll_to_catalog_and_mirror(
    traced: Traced,
) -> None:
    # The snapshot's batches applied first: a batch holding records of several traces is
    # a child of the first one's only (linked to the others).
    await _caught_up(traced.workers)
    # Nothing else writes to Directus meanwhile: a poll that found changes after this
    # moment found this one.
    created_ns = time.time_ns() - 1_000_000_000
    item = await traced.admin.create("customers", {"name": "Traced", "status": "active"})
    traced.made.append(int(item["id"]))
    chain: dict[str, ReceivedSpan] = {}

    async def complete() -> bool:
        spans = traced.receiver.spans
        polls = [s for s in spans if s.name == "directus poll" and s.start_ns >= created_ns]
        for poll in polls:
            publish = _child(spans, poll, "publish")
            if publish is None:
                continue
            apply = _child(spans, publish, "catalog apply")
            upsert = _child(spans, publish, "mirror upsert")
            if apply is not None and upsert is not None:
                chain.update(poll=poll, publish=publish, apply=apply, upsert=upsert)
                return True
        return False

    await wait_until(
        complete,
        timeout=60,
        what=lambda: (
            f"a poll → publish → apply/upsert chain; got {_dump(traced.receiver, created_ns)}"
        ),
    )
    poll, apply = chain["poll"], chain["apply"]
    assert poll.parent_id == ""  # a trace starts at the poll
    assert {s.trace_id for s in chain.values()} == {poll.trace_id}
    assert apply.attributes["messaging.system"] == "kafka"
    assert apply.attributes["messaging.operation.type"] == "process"
    assert apply.kind == 5  # SPAN_KIND_CONSUMER
    assert int(str(apply.attributes["dictamesh.traced_records"])) >= 1
    assert int(str(poll.attributes["dictamesh.events"])) >= 1
    assert chain["publish"].kind == 4  # SPAN_KIND_PRODUCER
    invalidation = _child(traced.receiver.spans, apply, "cache invalidate")
    assert invalidation is not None


async def _caught_up(workers: list[MeshWorker]) -> None:
    async def idle() -> bool:
        lags = [
            (labels["consumer"], value)
            for worker in workers
            for name, labels, value in (await worker.metrics()).samples
            if name == "dictamesh_consumer_lag_records"
        ]
        return {c for c, _ in lags} == {"catalog", "mirror"} and sum(v for _, v in lags) == 0

    await wait_until(idle, timeout=60, what="the catalog and the mirror caught up")


def _dump(receiver: OtlpReceiver, since: int) -> str:
    """The mirror's batch spans and the traces of the polls since ``since``, one a line."""
    polls = [s for s in receiver.spans if s.name == "directus poll" and s.start_ns >= since]
    out = []
    for poll in polls:
        for s in receiver.trace(poll.trace_id):
            out.append(f"{s.worker} {s.name} {s.span_id} <- {s.parent_id} {s.links}")
    return "\n".join(out)


async def test_a_nested_query_across_workers_is_one_trace(traced: Traced) -> None:
    a, b = traced.workers
    ids = " ".join(
        f'c{i}: customer(id: "{i}") {{ name invoices {{ number items {{ product {{ sku }} }} }} }}'
        for i in range(1, 9)
    )
    query = f"query Nested {{ {ids} }}"

    async def answered() -> bool:  # the seed is in the catalog
        status, answer = await _graphql(a, query)
        return status == 200 and "errors" not in answer and len(answer["data"]) == 8

    await wait_until(answered, timeout=60, what="the seed's customers 1-8 in the catalog")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = f"00-{trace_id}-00f067aa0ba902b7-01"
    status, answer = await _graphql(a, query, {"traceparent": parent, "Cache-Control": "no-cache"})
    assert status == 200, answer
    assert "errors" not in answer, answer

    expected = {(a.name, "POST /graphql"), (a.name, "query Nested"), (a.name, "graphql batch"),
                (b.name, "POST /api/v1/internal/entities")}  # fmt: skip

    async def exported() -> bool:  # spans are exported as they end, the outer ones last
        return expected <= {(s.worker, s.name) for s in traced.receiver.trace(trace_id)}

    await wait_until(exported, timeout=30, what=lambda: f"{traced.receiver.trace(trace_id)}")
    spans = traced.receiver.trace(trace_id)
    names = {(s.worker, s.name) for s in spans}
    # The peer hop: a's client span, then b's server span as its child.
    served = [s for s in spans if s.worker == b.name and s.kind == 2]  # SPAN_KIND_SERVER
    assert served, names
    client_ids = {s.span_id for s in spans if s.worker == a.name and s.kind == 3}
    assert all(s.parent_id in client_ids for s in served)


async def test_slo_metrics_and_exemplars(traced: Traced) -> None:
    a = traced.workers[0]
    status, _ = await _graphql(a, '{ customer(id: "1") { name } }')
    assert status == 200
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{a.base}/graphql", json={"query": '{ customer(id: "1") { name } }'}) as r,
    ):
        assert r.status == 401  # no token: a client error, timed too
    metrics = await a.metrics()
    ok = metrics.value(
        "dictamesh_request_duration_seconds_count", api="graphql", operation="query", outcome="ok"
    )
    refused = metrics.value(
        "dictamesh_request_duration_seconds_count", api="graphql", outcome="client_error"
    )
    assert ok >= 1
    assert refused >= 1
    item = await traced.admin.create("customers", {"name": "Fresh", "status": "active"})
    traced.made.append(int(item["id"]))

    async def observed() -> bool:  # the change, on its owner: in the catalog and the mirror
        stages = {"catalog": 0.0, "mirror": 0.0}
        for worker in traced.workers:
            scraped = await worker.metrics()
            for stage in stages:
                stages[stage] += scraped.value("dictamesh_freshness_seconds_count", stage=stage)
        return min(stages.values()) >= 1

    await wait_until(observed, timeout=30, what="freshness observed in the catalog and mirror")
    consumers = {
        labels["consumer"]
        for worker in traced.workers
        for name, labels, _ in (await worker.metrics()).samples
        if name == "dictamesh_consumer_lag_records"
    }
    assert consumers == {"catalog", "mirror"}
    assert metrics.value("dictamesh_worker_rebalances_total") >= 1
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{a.base}/metrics", headers={"Accept": "application/openmetrics-text"}) as r,
    ):
        text = await r.text()
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    exemplar = re.compile(
        r'^dictamesh_request_duration_seconds_bucket\{.*\} \S+ # \{trace_id="[0-9a-f]{32}"\}',
        re.M,
    )
    assert exemplar.search(text), text[:2000]
    assert text.rstrip().endswith("# EOF")
