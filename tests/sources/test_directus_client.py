"""DirectusClient against a real Directus 10.10.0: the feed, item reads, auth and failures.

The session's seeded Directus serves the feed and item tests through the adapter's static
service token. This module's own Directus (its own database) serves the login, token
expiry, secret rotation and restart tests; another one with a tight rate limiter the 429
test. Only 5xx and timeouts come from a fault injector, because Directus cannot be made to
answer them on demand.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from mesh_tooling.dev.directus import (
    SERVICE_ROLE,
    DirectusService,
    DirectusSettings,
    generate_service_token,
    seed_directus,
)
from mesh_tooling.dev.directus import (
    DirectusClient as AdminApi,
)
from mesh_tooling.dev.process import free_port
from pydantic import SecretStr
from yarl import URL

from mesh.domain import DomainConfig
from mesh.errors import SourceAuthError, SourceError
from mesh.retry import RetryPolicy
from mesh.sources.directus.client import FEED_ACTIONS, DirectusAuth, DirectusClient
from tests.fixtures.directus import ADMIN_EMAIL, ADMIN_PASSWORD, DirectusHandle

pytestmark = pytest.mark.directus

DOMAIN = ["customers", "products", "invoices", "invoice_items"]
LOGIN_EMAIL = "mesh-login@example.com"
LOGIN_PASSWORD = SecretStr("dictamesh-login-test-pw")
SHORT_TOKENS = {"ACCESS_TOKEN_TTL": "2s", "REFRESH_TOKEN_TTL": "4s"}


class Retries(list[SourceError]):
    """An ``on_retry`` hook keeping the errors; ``delays`` the announced waits."""

    def __init__(self) -> None:
        super().__init__()
        self.delays: list[float] = []

    def __call__(self, error: SourceError, attempt: int, delay: float) -> None:
        self.append(error)
        self.delays.append(delay)


def client(url: str, auth: DirectusAuth, **kw: Any) -> DirectusClient:
    kw.setdefault("retry", RetryPolicy(0.05, 0.5))
    return DirectusClient(url, auth, timeout_s=kw.pop("timeout_s", 10.0), **kw)


def static(token: str) -> DirectusAuth:
    return DirectusAuth.static(SecretStr(token), from_env="MESH_DIRECTUS_TOKEN")


def login() -> DirectusAuth:
    return DirectusAuth.login(LOGIN_EMAIL, LOGIN_PASSWORD, from_env="MESH_EMAIL/MESH_PASSWORD")


@pytest_asyncio.fixture
async def service(seeded: DirectusHandle) -> AsyncIterator[DirectusClient]:
    """The adapter's view of the session's Directus: its static service token."""
    async with client(seeded.url, static(seeded.service_token)) as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def admin(seeded: DirectusHandle) -> AsyncIterator[AdminApi]:
    async with aiohttp.ClientSession() as http:
        yield await AdminApi.login(http, seeded.url, ADMIN_EMAIL, ADMIN_PASSWORD)


# -- the change feed and item reads (session Directus) -------------------------------------


async def test_activity_pages_are_ordered_filtered_and_resume_after_an_id(
    service: DirectusClient,
) -> None:
    every = await service.activity_page(0, DOMAIN, 100_000)
    paged: list[Any] = []
    while page := await service.activity_page(paged[-1].id if paged else 0, DOMAIN, 40):
        assert len(page) <= 40
        paged += page
    assert paged == every
    assert [r.id for r in every] == sorted({r.id for r in every})
    assert {r.action for r in every} <= set(FEED_ACTIONS)
    assert {r.collection for r in every} == set(DOMAIN)
    assert await service.activity_head(DOMAIN) == every[-1].id
    customers = await service.activity_page(0, ["customers"], 100_000)
    assert customers == [r for r in every if r.collection == "customers"]
    assert await service.activity_head(["customers"]) == customers[-1].id
    assert await service.activity_head(["no_such_collection"]) == 0
    assert await service.activity_head([]) == 0
    assert await service.activity_page(every[-1].id, DOMAIN, 10) == []


async def test_changes_through_the_api_appear_in_the_feed(
    service: DirectusClient, admin: AdminApi
) -> None:
    head = await service.activity_head(["customers"])
    new = {"name": "Feed Test", "email": "feed@example.com", "status": "prospect"}
    item = str((await admin.request("POST", "/items/customers", new))["id"])
    kept = str((await admin.request("POST", "/items/customers", new))["id"])
    await admin.request("PATCH", f"/items/customers/{item}", {"status": "active"})
    await admin.request("DELETE", f"/items/customers/{item}")

    rows = await service.activity_page(head, ["customers", "products"], 100)
    mine = [r for r in rows if r.item == item]
    assert [r.action for r in mine] == ["create", "update", "delete"]
    assert {"name", "email", "status"} <= set(mine[0].delta_fields)
    assert "status" in mine[1].delta_fields
    assert "name" not in mine[1].delta_fields
    assert mine[2].delta_fields == ()
    now = datetime.now(UTC)
    assert all(
        r.timestamp.tzinfo is UTC and abs(now - r.timestamp) < timedelta(minutes=1) for r in mine
    )

    # The deleted item is simply absent from a batch read; the caller makes it a DELETE.
    found = await service.items_by_ids("customers", "id", [item, kept, "1", "99999999"])
    assert sorted(found) == sorted([kept, "1"])
    assert found[kept]["name"] == "Feed Test"
    await admin.request("DELETE", f"/items/customers/{kept}")


async def test_items_after_pages_by_key_across_pages(service: DirectusClient) -> None:
    everything = await service.items_after("customers", "id", None, 100_000)
    assert len(everything) >= 20  # so 7 a page crosses 9 -> 10: numeric, not text, order
    paged: list[dict[str, Any]] = []
    while page := await service.items_after(
        "customers", "id", str(paged[-1]["id"]) if paged else None, 7
    ):
        paged += page
    assert paged == everything
    assert [c["id"] for c in paged] == sorted(c["id"] for c in paged)


async def test_large_batches_are_chunked_and_searched(service: DirectusClient) -> None:
    customers = await service.items_after("customers", "id", None, 100_000)
    # 1,200 numeric ids (3 requests) plus duplicates; and 700 long string keys that would
    # overflow a GET URL (Node refuses > 16 KiB of headers): they go as SEARCH bodies.
    ids = [str(i) for i in range(1, 1201)] + ["1", "2"]
    by_id = await service.items_by_ids("customers", "id", ids)
    assert by_id == {str(c["id"]): c for c in customers if c["id"] <= 1200}
    emails = [f"nobody-{i}-{'x' * 40}@example.com, or so" for i in range(700)]
    real = [c["email"] for c in customers if c["email"]]
    by_email = await service.items_by_ids("customers", "email", [*emails, *real])
    assert sorted(by_email) == sorted(real)


async def test_a_missing_collection_is_a_permanent_error(service: DirectusClient) -> None:
    with pytest.raises(SourceError) as caught:
        await service.items_after("no_such_collection", "id", None, 10)
    assert not caught.value.retriable
    assert caught.value.status == 403
    assert "permission" in str(caught.value)


# -- credentials ----------------------------------------------------------------------------


async def test_a_rejected_static_token_names_its_env_var(seeded: DirectusHandle) -> None:
    retries = Retries()
    token = "not-the-token-" + secrets.token_hex(8)
    async with client(seeded.url, static(token), on_retry=retries) as c:
        with pytest.raises(SourceAuthError) as caught:
            await c.activity_head(DOMAIN)
    assert not caught.value.retriable
    assert "MESH_DIRECTUS_TOKEN" in str(caught.value)
    assert token not in str(caught.value)
    assert retries == []


async def test_a_refused_login_names_its_env_vars(seeded: DirectusHandle) -> None:
    auth = DirectusAuth.login("nobody@example.com", LOGIN_PASSWORD, from_env="MESH_EMAIL")
    async with client(seeded.url, auth) as c:
        with pytest.raises(SourceAuthError) as caught:
            await c.activity_head(DOMAIN)
    assert "MESH_EMAIL" in str(caught.value)
    assert LOGIN_PASSWORD.get_secret_value() not in str(caught.value)


@dataclass
class OwnDirectus:
    """This module's Directus: restartable with other settings on the same database."""

    service: DirectusService
    service_token: str

    @property
    def url(self) -> str:
        return self.service.url

    async def restart(self, **env: str) -> None:
        await self.service.stop()
        settings = self.service.settings
        self.service = DirectusService(replace(settings, extra_env={**settings.extra_env, **env}))
        await self.service.start()


async def start_directus(
    install: Path, make_database: Callable[[], str], state: Path, env: dict[str, str]
) -> DirectusService:
    service = DirectusService(
        DirectusSettings(
            install_dir=install,
            database_url=make_database(),
            state_dir=state,
            admin_email=ADMIN_EMAIL,
            admin_password=ADMIN_PASSWORD,
            port=free_port(),
            extra_env=env,
        )
    )
    await service.bootstrap()
    await service.start()
    return service


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def own(
    directus_install: Path,
    make_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
    sample_domain: DomainConfig,
) -> AsyncIterator[OwnDirectus]:
    """A seeded Directus with a login user holding the adapter role."""
    state = tmp_path_factory.mktemp("own-directus")
    own = OwnDirectus(await start_directus(directus_install, make_database, state, {}), "")
    try:
        own.service_token = generate_service_token()
        rows = {"customer": 5, "product": 0, "invoice": 0, "invoice_item": 0}
        await seed_directus(
            own.url,
            ADMIN_EMAIL,
            ADMIN_PASSWORD,
            sample_domain,
            service_token=own.service_token,
            rows=rows,
        )
        async with aiohttp.ClientSession() as http:
            api = await AdminApi.login(http, own.url, ADMIN_EMAIL, ADMIN_PASSWORD)
            roles = await api.request("GET", "/roles", params={"filter[name][_eq]": SERVICE_ROLE})
            user = {"email": LOGIN_EMAIL, "password": LOGIN_PASSWORD.get_secret_value()}
            await api.request(
                "POST", "/users", {**user, "role": roles[0]["id"], "status": "active"}
            )
        yield own
    finally:
        await own.service.stop()


async def test_a_token_signed_with_an_old_secret_is_renewed_once(own: OwnDirectus) -> None:
    retries = Retries()
    async with client(own.url, login(), on_retry=retries) as c:
        assert await c.activity_head(["customers"]) > 0
        assert (c.logins, c.refreshes) == (1, 0)
        # A new SECRET voids every access token (403 INVALID_TOKEN) but not the sessions,
        # so one refresh recovers. The short TTLs are for the next test (saves a restart).
        await own.restart(SECRET=secrets.token_urlsafe(32), **SHORT_TOKENS)
        assert await c.activity_head(["customers"]) > 0
        assert (c.logins, c.refreshes) == (1, 1)
    assert retries == []


async def test_expiring_tokens_are_refreshed_then_renewed_by_login(own: OwnDirectus) -> None:
    if any(own.service.settings.extra_env.get(k) != v for k, v in SHORT_TOKENS.items()):
        await own.restart(**SHORT_TOKENS)
    async with client(own.url, login()) as c:
        head = await c.activity_head(["customers"])
        await asyncio.sleep(3)  # the access token (2 s) expired, the refresh token (4 s) not
        assert await c.activity_head(["customers"]) == head
        assert (c.logins, c.refreshes) == (1, 1)
        await asyncio.sleep(5)  # the refresh token expired too: Directus refuses it
        assert await c.activity_head(["customers"]) == head
        assert (c.logins, c.refreshes) == (2, 1)


async def test_a_call_waits_for_a_restarted_directus(own: OwnDirectus) -> None:
    await own.service.stop()
    retries = Retries()
    async with (
        client(own.url, static(own.service_token), should_stop=lambda: True) as once,
        client(own.url, static(own.service_token), on_retry=retries) as patient,
    ):
        with pytest.raises(SourceError) as caught:
            await once.activity_head(["customers"])
        assert caught.value.retriable
        assert own.service_token not in str(caught.value)

        async def restart_later() -> None:
            await asyncio.sleep(2)
            await own.service.start()

        restarting = asyncio.create_task(restart_later())
        assert await patient.activity_head(["customers"]) > 0
        await restarting
    assert retries
    assert all(e.retriable for e in retries)


# -- rate limiting (Directus' own limiter) ------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def limited(
    directus_install: Path,
    make_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[DirectusService]:
    """A Directus allowing 5 requests a second per client IP (not seeded)."""
    env = {"RATE_LIMITER_ENABLED": "true", "RATE_LIMITER_POINTS": "5", "RATE_LIMITER_DURATION": "1"}
    state = tmp_path_factory.mktemp("limited-directus")
    service = await start_directus(directus_install, make_database, state, env)
    yield service
    await service.stop()


async def test_429_backs_off_as_long_as_directus_asks(limited: DirectusService) -> None:
    retries = Retries()
    auth = DirectusAuth.login(ADMIN_EMAIL, SecretStr(ADMIN_PASSWORD))
    async with client(limited.url, auth, retry=RetryPolicy(0.05, 2.0), on_retry=retries) as c:
        heads = await asyncio.gather(*(c.activity_head(["customers"]) for _ in range(15)))
    assert heads == [0] * 15
    limited_by = [(e, d) for e, d in zip(retries, retries.delays, strict=True) if e.status == 429]
    assert limited_by
    for error, delay in limited_by:
        assert error.retriable
        assert error.retry_after is not None
        assert delay >= error.retry_after


# -- 5xx and timeouts: a fault injector in front of the real Directus ---------------------


class FaultInjector:
    """A proxy to Directus that first answers ``statuses`` (one per request), then stalls
    ``stalls`` requests for ``stall_s`` seconds, then forwards everything."""

    def __init__(self, upstream: str, statuses: list[int], stalls: int = 0, stall_s: float = 0):
        self.upstream, self.statuses, self.stalls, self.stall_s = (
            upstream,
            statuses,
            stalls,
            stall_s,
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.statuses:
            headers = {"Retry-After": "1"} if self.statuses[0] == 503 else {}
            error = {"errors": [{"message": "injected", "extensions": {"code": "INJECTED"}}]}
            return web.json_response(error, status=self.statuses.pop(0), headers=headers)
        if self.stalls:
            self.stalls -= 1
            await asyncio.sleep(self.stall_s)
        forward = {
            k: v for k, v in request.headers.items() if k in ("Authorization", "Content-Type")
        }
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                request.method,
                URL(self.upstream + request.raw_path, encoded=True),
                headers=forward,
                data=await request.read(),
            ) as resp,
        ):
            kept = {k: v for k, v in resp.headers.items() if k in ("Content-Type", "Retry-After")}
            return web.Response(status=resp.status, body=await resp.read(), headers=kept)


@pytest_asyncio.fixture
async def injector(seeded: DirectusHandle) -> AsyncIterator[tuple[FaultInjector, str]]:
    faults = FaultInjector(seeded.url, [])
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", faults.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield faults, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_5xx_are_retried_honouring_retry_after(
    injector: tuple[FaultInjector, str], seeded: DirectusHandle, service: DirectusClient
) -> None:
    faults, url = injector
    faults.statuses = [500, 502, 503]
    retries = Retries()
    auth = static(seeded.service_token)
    async with client(url, auth, retry=RetryPolicy(0.05, 2.0), on_retry=retries) as c:
        assert await c.activity_head(DOMAIN) == await service.activity_head(DOMAIN)
    assert [e.status for e in retries] == [500, 502, 503]
    assert all(e.retriable and "injected" in str(e) for e in retries)
    assert retries[2].retry_after == 1.0
    assert retries.delays[2] >= 1.0


async def test_timeouts_are_retried(
    injector: tuple[FaultInjector, str], seeded: DirectusHandle, service: DirectusClient
) -> None:
    faults, url = injector
    faults.stalls, faults.stall_s = 2, 1.0
    retries = Retries()
    async with client(url, static(seeded.service_token), timeout_s=0.3, on_retry=retries) as c:
        assert await c.items_by_ids("customers", "id", ["1"]) == await service.items_by_ids(
            "customers", "id", ["1"]
        )
    assert len(retries) == 2
    assert all(e.retriable and "no answer within 0.3 s" in str(e) for e in retries)
