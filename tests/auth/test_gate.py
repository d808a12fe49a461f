"""The worker's gate, end to end: a real worker checks the bearer token of every GraphQL
and REST request (the test issuer's public key in ``MESH_AUTH_PUBLIC_KEY_FILE``), leaves
the probes, the metrics and the GraphiQL page open, and tells a refused client only that
its token is missing or invalid (the log says why). ``MESH_AUTH=off`` says so."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from mesh.auth.peer import PeerSigner
from mesh.auth.principal import Principal
from mesh.domain import DomainConfig
from mesh.sources.events import Op
from tests.support.auth import FLEET_SECRET, bearer, issuer
from tests.support.fleet import Fleet, at_version, customer, entity, eventually, open_fleet
from tests.support.workers import MeshWorker

ENTITY = "/api/v1/entities/customer/1"
QUERY = {"query": '{ customer(id: "1") { name } }'}


@pytest_asyncio.fixture(scope="module")
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    root = tmp_path_factory.mktemp("auth-gate")
    async with open_fleet(sample_domain, root, "auth-gate", 2, ["gate-a"]) as fleet:
        await fleet.send("customer", 1, 1, customer("Ada"), Op.CREATE)
        await eventually(fleet.workers[0], entity("customer", 1), at_version(1))
        yield fleet


async def _ask(
    worker: MeshWorker, method: str, path: str, headers: dict[str, str] | None = None, **kw: object
) -> tuple[int, dict[str, str], object]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, worker.base + path, headers=headers or {}, **kw) as resp,  # type: ignore[arg-type]
    ):
        body = (
            await resp.json(content_type=None) if "json" in resp.content_type else await resp.text()
        )
        return resp.status, dict(resp.headers), body


async def test_rest_and_graphql_need_a_token(fleet: Fleet) -> None:
    worker = fleet.workers[0]
    status, headers, body = await _ask(worker, "GET", ENTITY)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Bearer realm="dictamesh", error="invalid_token"')
    assert body == {"error": {"code": "unauthorized", "message": "missing bearer token"}}
    status, _, body = await _ask(worker, "POST", "/graphql", json=QUERY)
    assert status == 401
    assert body == {
        "errors": [{"message": "missing bearer token", "extensions": {"code": "UNAUTHENTICATED"}}]
    }
    status, _, body = await _ask(worker, "GET", ENTITY, headers=bearer())
    assert status == 200
    status, _, body = await _ask(worker, "POST", "/graphql", headers=bearer(), json=QUERY)
    assert (status, body) == (200, {"data": {"customer": {"name": "Ada"}}})


async def test_whoami_answers_the_token_s_principal_and_only_with_one(fleet: Fleet) -> None:
    worker = fleet.workers[0]
    status, _, body = await _ask(worker, "GET", "/api/v1/whoami")
    assert status == 401
    token = bearer(scopes=("pii:read", "orders:write"))
    for method in ("GET", "POST"):  # POST: the benchmark's baseline, the same answer
        status, _, body = await _ask(worker, method, "/api/v1/whoami", headers=token)
        assert status == 200
        assert isinstance(body, dict)
        assert body["subject"] == "tests"
        assert body["tenant"] == "default"
        assert body["scopes"] == ["orders:write", "pii:read"]
        assert body["expires_at"] > 0
    audit = [line for line in worker.run_log().splitlines() if "/api/v1/whoami" in line]
    assert len(audit) >= 3  # audited like any request, the refused one too


async def test_a_bad_token_is_told_only_that_it_is_invalid(fleet: Fleet) -> None:
    worker = fleet.workers[0]
    expired = issuer().mint("default", ttl_s=-3600)
    unknown_tenant = issuer().mint("initech")
    for token, why in ((expired, "expired"), (unknown_tenant, "initech")):
        status, headers, body = await _ask(
            worker, "GET", ENTITY, headers={"Authorization": f"Bearer {token}"}
        )
        assert status == 401
        assert body == {"error": {"code": "unauthorized", "message": "invalid bearer token"}}
        assert why not in str(headers) + str(body)  # which check failed is not said
        assert why in worker.run_log()  # it is logged


async def test_probes_metrics_and_the_graphiql_page_are_open(fleet: Fleet) -> None:
    worker = fleet.workers[0]
    for path in ("/healthz", "/readyz", "/metrics"):
        status, _, _ = await _ask(worker, "GET", path)
        assert status == 200, path
    status, _, page = await _ask(worker, "GET", "/graphql", headers={"Accept": "text/html"})
    assert status == 200
    assert "GraphiQL" in str(page)
    # A query sent by GET is no page: it needs the token.
    status, _, _ = await _ask(
        worker, "GET", "/graphql", headers={"Accept": "text/html"}, params=QUERY
    )
    assert status == 401
    status, _, ready = await _ask(worker, "GET", "/readyz")
    assert isinstance(ready, dict)
    assert ready["auth"] == "jwt"


async def test_auth_off_serves_without_tokens_and_says_so(
    fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("auth-off")
    env = {k: v for k, v in fleet.workers[0].env.items() if not k.startswith("MESH_AUTH")}
    off = MeshWorker(
        "gate-off", app_id="auth-gate-off", state_dir=root / "state", log_dir=root,
        env={**env, "MESH_AUTH": "off"},
    )  # fmt: skip
    async with contextlib.AsyncExitStack() as cleanup:
        await off.start()
        cleanup.push_async_callback(off.stop)
        await off.wait_ready()
        status, _, ready = await _ask(off, "GET", "/readyz")
        assert isinstance(ready, dict), ready
        assert ready["auth"] == "off", ready
        assert "WITHOUT authentication" in off.run_log(), off.log_tail()
        await eventually(off, entity("customer", 1), at_version(1))
        status, _, answer = await _ask(off, "GET", ENTITY)  # no token sent
        assert status == 200, (answer, off.log_tail())
        assert isinstance(answer, dict)
        assert answer["tenant"] == "default"  # the first tenant, unless the header says
        status, _, answer = await _ask(off, "GET", ENTITY, headers={"X-Mesh-Tenant": "beta"})
        assert status == 404, answer  # beta has no such customer


async def test_peer_endpoints_answer_only_the_fleet_s_signed_calls(fleet: Fleet) -> None:
    worker = fleet.workers[0]
    path, body = "/api/v1/internal/entities", b'{"tenant": "default", "keys": []}'
    json_type = {"Content-Type": "application/json"}
    # Without a signature, with a user's token, or signed with another secret: 403.
    for headers in ({}, bearer(), PeerSigner(b"x" * 32).headers("POST", path, body)):
        status, _, answer = await _ask(
            worker, "POST", path, headers={**json_type, **headers}, data=body
        )
        assert status == 403, headers
        assert answer == {
            "error": {"code": "forbidden", "message": "peer endpoints are the fleet's"}
        }
    signed = {**json_type, **PeerSigner(FLEET_SECRET.encode()).headers("POST", path, body)}
    status, _, _ = await _ask(worker, "POST", path, headers=signed, data=body)
    assert status == 200
    status, _, _ = await _ask(worker, "POST", path, headers=signed, data=body)  # replayed
    assert status == 403
    assert "replay" in worker.run_log()
    # A call the fleet makes for a user reads only that user's tenant.
    user = Principal("someone", "default", frozenset(), float("inf"))
    other = b'{"tenant": "beta", "keys": []}'
    signed = {**json_type, **PeerSigner(FLEET_SECRET.encode()).headers("POST", path, other, user)}
    status, _, answer = await _ask(worker, "POST", path, headers=signed, data=other)
    assert status == 400, answer
    assert "only read the user's tenant" in str(answer)


async def test_a_worker_s_own_read_of_a_public_path_is_signed_not_tokened(fleet: Fleet) -> None:
    """A worker asking another for an entity's children (the Directus adapter's lookup)
    has no user token: the fleet's signature stands in for it, a wrong one does not."""
    worker = fleet.workers[0]
    path = "/api/v1/entities/customer/1/relations"
    signed = PeerSigner(FLEET_SECRET.encode()).headers("GET", path, b"")
    status, _, _ = await _ask(worker, "GET", path, headers=signed)
    assert status == 200
    forged = PeerSigner(b"x" * 32).headers("GET", path, b"")
    status, _, _ = await _ask(worker, "GET", path, headers=forged)
    assert status == 401


async def test_each_request_leaves_an_audit_line_without_variable_values(fleet: Fleet) -> None:
    worker = fleet.workers[0]
    query = {
        "query": "query Named($id: ID!) { customer(id: $id) { name } }",
        "operationName": "Named",
        "variables": {"id": "1", "secret": "do-not-log-this"},
    }
    status, _, _ = await _ask(worker, "POST", "/graphql", headers=bearer(), json=query)
    assert status == 200
    await _ask(worker, "GET", ENTITY)  # refused: audited without a subject
    log = worker.run_log()
    assert re.search(
        r"subject=tests tenant=default method=POST path=/graphql operation=Named "
        r"status=200 duration_ms=\d",
        log,
    ), log[-2000:]
    assert re.search(rf"subject=- tenant=- method=GET path={ENTITY} operation=- status=401", log)
    assert "do-not-log-this" not in log


async def test_a_subject_over_its_rate_gets_429_with_retry_after(
    fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("auth-limited")
    limited = MeshWorker(
        "gate-limited", app_id="auth-gate-limited", state_dir=root / "state", log_dir=root,
        env={**fleet.workers[0].env, "MESH_RATE_LIMIT_PER_S": "0.5", "MESH_RATE_LIMIT_BURST": "2"},
    )  # fmt: skip
    async with contextlib.AsyncExitStack() as cleanup:
        await limited.start()
        cleanup.push_async_callback(limited.stop)
        await limited.wait_ready()
        other = {"Authorization": f"Bearer {issuer().mint('default', subject='someone-else')}"}
        answers = [
            (await _ask(limited, "GET", "/api/v1/catalog/types", headers=bearer()))
            for _ in range(3)
        ]
        assert [a[0] for a in answers[:2]] == [200, 200]
        status, headers, body = answers[2]
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        assert body == {
            "error": {
                "code": "rate_limited",
                "message": f"too many requests; retry after {headers['Retry-After']} s",
            }
        }
        assert (await _ask(limited, "GET", "/api/v1/catalog/types", headers=other))[0] == 200
        metrics = await limited.metrics()
        assert metrics.value("dictamesh_auth_refused_total", reason="rate_limited") == 1


async def test_a_field_with_a_scope_policy_is_withheld_from_tokens_without_it(
    fleet: Fleet,
) -> None:
    """``customer.email`` requires ``pii:read`` in the sample domain."""
    worker = fleet.workers[0]
    plain = bearer(scopes=())
    query = {"query": '{ customer(id: "1") { name email } }'}
    # With the scope first, so a cached answer would be there to leak.
    status, _, body = await _ask(worker, "POST", "/graphql", headers=bearer(), json=query)
    assert (status, body) == (
        200,
        {"data": {"customer": {"name": "Ada", "email": "ada@example.com"}}},
    )
    status, _, body = await _ask(worker, "POST", "/graphql", headers=plain, json=query)
    assert status == 200
    assert isinstance(body, dict)
    assert body["data"] == {"customer": {"name": "Ada", "email": None}}
    assert [e["message"] for e in body["errors"]] == ["reading 'email' requires the scope pii:read"]
    assert body["errors"][0]["path"] == ["customer", "email"]
    # Filtering on it would tell its values.
    listed = {"query": '{ customers(filter: {email: "ada@example.com"}) { nodes { id } } }'}
    status, _, body = await _ask(worker, "POST", "/graphql", headers=plain, json=listed)
    assert isinstance(body, dict)
    assert body["data"] is None or body["data"]["customers"] is None
    assert "filtering on 'email' requires the scope pii:read" in str(body["errors"])
    status, _, body = await _ask(worker, "POST", "/graphql", headers=bearer(), json=listed)
    assert body == {"data": {"customers": {"nodes": [{"id": "1"}]}}}
    # REST leaves the field out.
    status, _, body = await _ask(worker, "GET", ENTITY, headers=plain)
    assert status == 200
    assert isinstance(body, dict)
    assert "email" not in body["data"]
    assert body["data"]["name"] == "Ada"
    status, _, body = await _ask(worker, "GET", ENTITY, headers=bearer())
    assert isinstance(body, dict)
    assert body["data"]["email"] == "ada@example.com"
