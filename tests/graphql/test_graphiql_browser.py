"""GraphiQL in a real headless Chromium, served by a real worker with authentication on.

One ``python -m mesh worker`` (its own broker and registry, the test issuer's key) holds a
customer. Debian's Chromium opens ``GET /graphql``, a query is typed into GraphiQL's editor
and run: without a token the page shows the worker's 401; with a token typed into the
page's token bar it shows the customer, even with another token typed into GraphiQL's
headers editor. Throughout, nothing may leave the worker's origin, no
Content-Security-Policy violation may be reported and no script may fail; the token stays
out of URLs and localStorage. The page's and its files' headers are checked over plain
HTTP.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Page

from mesh.domain import DomainConfig
from mesh.graphql.graphiql import CONTENT_SECURITY_POLICY, IMMUTABLE, load_page
from mesh.sources.events import Op
from tests.support.auth import bearer
from tests.support.browser import PageWatch, chromium
from tests.support.fleet import Fleet, at_version, customer, entity, eventually, open_fleet

QUERY = '{ customer(id: "1") { id name email } }'
ANSWER = {"data": {"customer": {"id": "1", "name": "Ada", "email": "ada@example.com"}}}
REFUSED = {
    "errors": [{"message": "missing bearer token", "extensions": {"code": "UNAUTHENTICATED"}}]
}
EDITOR = ".graphiql-query-editor .CodeMirror"
RESULT = ".result-window .CodeMirror"


@pytest_asyncio.fixture(scope="module")
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    """One worker with authentication on (the default) and customer 1, Ada."""
    root = tmp_path_factory.mktemp("graphiql")
    async with open_fleet(sample_domain, root, "graphiql", 2, ["giql-a"]) as fleet:
        await fleet.send("customer", 1, 1, customer("Ada"), Op.CREATE)
        await eventually(fleet.workers[0], entity("customer", 1), at_version(1))
        yield fleet


async def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_the_page_and_its_files_come_from_the_worker_with_their_policy(
    fleet: Fleet,
) -> None:
    base = fleet.workers[0].base
    status, headers, html = await _get(f"{base}/graphql", Accept="text/html")  # no token
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-cache"
    page = load_page("/graphiql/")
    assert html == page.html
    for url, asset in page.assets.items():
        status, headers, body = await _get(base + url)  # no token: the files are open
        assert status == 200, url
        assert body == asset.body, url
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, url
        assert headers["X-Content-Type-Options"] == "nosniff", url
        assert headers["Cache-Control"] == IMMUTABLE, url
        kind = "text/javascript" if url.endswith(".js") else "text/css"
        assert headers["Content-Type"] == f"{kind}; charset=utf-8", url
    # Only the files of this version, by digest and name.
    url = next(iter(page.assets))
    _, prefix, digest, name = url.split("/")
    for wrong in (f"/{prefix}/{'0' * 16}/{name}", f"/{prefix}/{digest}/x.js", f"{url}.map"):
        status, headers, _ = await _get(base + wrong)
        assert status == 404, wrong


async def _editor_text(page: Page, selector: str) -> str:
    found: Any = await page.evaluate(
        "(s) => document.querySelector(s).CodeMirror.getValue()", selector
    )
    return str(found)


async def _run(page: Page, expected: str) -> Any:
    """Click GraphiQL's run button; the result pane's JSON once it contains ``expected``."""
    async with page.expect_response(
        lambda r: r.request.method == "POST" and "customer(id:" in (r.request.post_data or "")
    ):
        await page.click(".graphiql-execute-button")
    await page.wait_for_function(
        "([s, text]) => document.querySelector(s).CodeMirror.getValue().includes(text)",
        arg=[RESULT, expected],
    )
    return json.loads(await _editor_text(page, RESULT))


async def test_graphiql_runs_a_query_in_chromium_with_the_token_typed_into_the_page(
    fleet: Fleet,
) -> None:
    worker = fleet.workers[0]
    token = bearer()["Authorization"].removeprefix("Bearer ")
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        page = await context.new_page()
        watch = await PageWatch.on(page)
        opened = await page.goto(f"{worker.base}/graphql")
        assert opened is not None
        assert opened.status == 200
        await page.wait_for_selector(".graphiql-container")

        # No token: GraphiQL's schema fetch and the query are refused, and the page says so.
        await page.click(EDITOR)
        await page.keyboard.press("Control+A")
        await page.keyboard.type(QUERY)
        assert await _editor_text(page, EDITOR) == QUERY
        assert await _run(page, "missing bearer token") == REFUSED
        assert "401 missing bearer token" in await page.inner_text("#dictamesh-token-state")

        # The token typed into the page's bar: the same query answers the customer.
        await page.fill("#dictamesh-token-input", token)
        async with page.expect_response(  # GraphiQL started again, fetching the schema
            lambda r: "IntrospectionQuery" in (r.request.post_data or "") and r.status == 200
        ):
            await page.press("#dictamesh-token-input", "Enter")
        assert "token set" in await page.inner_text("#dictamesh-token-state")
        assert await _editor_text(page, EDITOR) == QUERY  # GraphiQL kept the tab
        async with page.expect_request(lambda r: "customer(id:" in (r.post_data or "")) as sent:
            answer = await _run(page, '"Ada"')
        assert answer == ANSWER
        assert (await (await sent.value).all_headers())["authorization"] == f"Bearer {token}"

        # An Authorization typed into GraphiQL's headers editor does not replace the bar's.
        await page.click(".graphiql-editor-tools button:has-text('Headers')")
        await page.click(".graphiql-editor-tool .CodeMirror-lines >> visible=true")
        await page.keyboard.type('{"authorization": "Bearer not-a-token"}')
        typed = await page.evaluate(
            """[...document.querySelectorAll('.graphiql-editor-tool .CodeMirror')]
                 .map((e) => e.CodeMirror.getValue())"""
        )
        assert '{"authorization": "Bearer not-a-token"}' in typed
        async with page.expect_request(lambda r: "customer(id:" in (r.post_data or "")) as sent:
            assert await _run(page, '"Ada"') == ANSWER
        assert (await (await sent.value).all_headers())["authorization"] == f"Bearer {token}"

        # The schema came with the token: the docs explorer lists the domain's types, and
        # the settings dialog opens (it adds a <style> element, which the CSP allows).
        await page.click("button[aria-label='Show Documentation Explorer']")
        await page.wait_for_selector(".graphiql-doc-explorer >> text=Customer")
        await page.click("button[aria-label='Open settings dialog']")
        await page.wait_for_selector("[role=dialog] >> text=Settings")
        await page.keyboard.press("Escape")

        # The token lives in this tab's sessionStorage only.
        assert await page.evaluate("sessionStorage.getItem('dictamesh.graphiql.token')") == token
        local: Any = await page.evaluate("JSON.stringify(Object.entries(localStorage))")
        assert token not in str(local)
        assert all(token not in sent.url for sent in watch.sent)

        # Nothing left the worker's origin; no policy violation, no failing script.
        origins = {f"{u.scheme}://{u.netloc}" for u in (urlsplit(s.url) for s in watch.sent)}
        assert origins == {worker.base}, watch.sent
        assert await PageWatch.violations(page) == []
        assert watch.exceptions == []
        unexpected = [e for e in watch.console_errors if "status of 401" not in e]
        assert unexpected == [], unexpected
        refused = [s for s in watch.sent if s.status == 401]
        assert refused, "the token-less requests were not refused"
        assert all(s.method == "POST" and s.url == f"{worker.base}/graphql" for s in refused)
        assert all(s.status == 200 for s in watch.sent if s.method == "GET"), watch.sent
        await context.close()
