"""Fuzzing ``/graphql`` on a real two-worker fleet: no 5xx, GraphQL over HTTP answers, limits.

Its own Tansu broker and schema registry and two ``python -m mesh worker`` processes (app
id ``graphql-fuzz``, 4 partitions per topic) with a small dataset, so generated queries read
across both workers. Queries come from three sources:

* schemathesis (its GraphQL support is hypothesis-graphql) generates valid queries for every
  root field of the schema the workers introspect;
* hypothesis strategies here mutate those queries, send garbage bodies (not JSON, JSON that
  is no request, wrong variable types, odd ``operationName``), federation calls, and GET;
* queries built around each limit (depth 10, aliases 30, tokens 2000, 64 KiB bodies), where
  the verdict is known exactly.

Every answer must be JSON with ``data`` and/or ``errors`` as GraphQL over HTTP says, never a
5xx, 400/405/413 only where expected, and no error may carry a traceback or a "Did you mean"
suggestion. Hypothesis runs derandomized (a fixed seed per test) with no example database,
so CI sees the same examples every run; the HTTP calls use ``requests`` in a thread.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from itertools import cycle
from typing import Any

import pytest
import pytest_asyncio
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.domain import DomainConfig
from mesh.sources.events import Op
from tests.support.auth import bearer
from tests.support.fleet import TIMEOUT, Fleet, customer, invoice, invoice_item, open_fleet, product
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker

APP_ID = "graphql-fuzz"
PARTITIONS = 4
MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_TOKENS = 2000
MAX_BODY = 64 * 1024
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=120,
    suppress_health_check=list(HealthCheck),
)
LEAKS = re.compile(r"Traceback|Did you mean|File \"|\.py\", line|stacktrace", re.IGNORECASE)
ALLOWED = {200, 400, 405, 413}


@pytest_asyncio.fixture(scope="module")
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    """Broker, registry, topics and two ready workers of ``graphql-fuzz``, with a few
    customers, products, invoices and items (and a deleted invoice) folded in."""
    root = tmp_path_factory.mktemp("graphql-fuzz")
    names = ["fuzz-a", "fuzz-b"]
    async with open_fleet(sample_domain, root, APP_ID, PARTITIONS, names) as fleet:
        for pid, (sku, price) in enumerate([("bolt", "12.50"), ("nut", "0.30")], start=1):
            await fleet.send("product", pid, 10 + pid, product(sku, price), Op.CREATE)
        for cid, name in enumerate(["Ada", "Bob", "Cy"], start=1):
            await fleet.send("customer", cid, 20 + cid, customer(name), Op.CREATE)
        for n in range(6):
            await fleet.send("invoice", 100 + n, 30 + n, invoice(f"F-{n}", 1 + n % 3), Op.CREATE)
            item = invoice_item(100 + n, 1 + n % 2, n + 1)
            await fleet.send("invoice_item", 1000 + n, 40 + n, item, Op.CREATE)
        await fleet.send("invoice", 105, 50, None)
        query = '{ customer(id: "1") { invoices { id items { product { sku } } } } }'
        invoices = [
            {"id": "100", "items": [{"product": {"sku": "bolt"}}]},
            {"id": "103", "items": [{"product": {"sku": "nut"}}]},
        ]
        want = {"customer": {"invoices": invoices}}

        async def folded() -> bool:
            for worker in fleet.workers:
                answer = await asyncio.to_thread(post_json, worker, {"query": query})
                if answer.status != 200 or answer.body != {"data": want}:
                    return False
            return True

        await wait_until(folded, timeout=TIMEOUT, what="the fuzz dataset on both workers")
        yield fleet


# -- HTTP and the invariants ------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    content_type: str
    text: str
    body: Any


def call(
    worker: MeshWorker,
    body: bytes | None = None,
    *,
    method: str = "POST",
    content_type: str = "application/json",
    params: dict[str, str] | None = None,
    token: bool = True,
) -> Answer:
    """One HTTP request to ``/graphql`` (blocking: run it in a thread), with the tests'
    bearer token unless ``token`` is false."""
    auth = bearer() if token else {}
    resp = requests.request(
        method,
        f"{worker.base}/graphql",
        data=body,
        params=params,
        headers={**auth, "Content-Type": content_type, "Accept": "application/json"},
        timeout=30,
    )
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
    try:
        decoded: Any = resp.json()
    except ValueError:
        decoded = None
    return Answer(resp.status_code, ctype, resp.text, decoded)


def post_json(worker: MeshWorker, request: Any, *, token: bool = True) -> Answer:
    return call(worker, json.dumps(request).encode(), token=token)


def check(answer: Answer, what: object, expect: set[int] | None = None) -> dict[str, Any]:
    """The invariants of every answer; the decoded body."""
    where = f"{what!r:.500} answered {answer.status} {answer.text[:500]!r}"
    assert answer.status < 500, where
    assert answer.status in (expect or ALLOWED), where
    assert answer.content_type == "application/json", where
    body = answer.body
    assert isinstance(body, dict), where
    assert set(body) <= {"data", "errors", "extensions"}, where
    if answer.status == 200:
        assert "data" in body, where
        assert body["data"] is None or isinstance(body["data"], dict), where
    else:
        assert "data" not in body, where
    if "errors" in body or answer.status != 200:
        errors = body["errors"]
        assert isinstance(errors, list), where
        assert errors, where
        for error in errors:
            assert isinstance(error, dict), where
            assert isinstance(error.get("message"), str), where
            assert error["message"] != "", where
    assert not LEAKS.search(json.dumps(body.get("errors", []))), where
    assert "internal error" not in answer.text, where
    return body


def messages(body: dict[str, Any]) -> str:
    return " | ".join(e["message"] for e in body.get("errors", []))


def run_fuzz(test: Callable[[], None]) -> Any:
    """Run a (blocking) hypothesis test in a thread, keeping the event loop free."""
    return asyncio.to_thread(test)


# -- valid queries from the schema (schemathesis) ---------------------------------------------


async def test_schema_generated_queries_never_fail_the_server(fleet: Fleet) -> None:
    a, b = fleet.workers
    schema = await asyncio.to_thread(
        schemathesis.graphql.from_url, f"{a.base}/graphql", headers=bearer()
    )
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    labels = {op.label for op in operations}
    assert {"Query.customer", "Query.invoices", "Query.invoiceItem"} <= labels, labels
    cases = st.one_of([schema.get_case_strategy(op) for op in operations])
    workers = cycle([a, b])
    statuses: dict[str, int] = {"data": 0, "errors": 0}

    @FUZZ
    @given(case=cases, mutate=st.none() | st.tuples(st.integers(0, 10**6), st.text(max_size=3)))
    def fuzz(case: Any, mutate: tuple[int, str] | None) -> None:
        query = str(case.body)
        if mutate is not None:  # a broken variant: a few characters replaced somewhere
            at = mutate[0] % (len(query) + 1)
            query = query[:at] + mutate[1] + query[at + len(mutate[1]) :]
        answer = post_json(next(workers), {"query": query})
        body = check(answer, query, {200})
        statuses["errors" if "errors" in body else "data"] += 1

    await run_fuzz(fuzz)

    @FUZZ
    @given(case=cases)
    def without_a_token(case: Any) -> None:
        answer = post_json(next(workers), {"query": str(case.body)}, token=False)
        body = check(answer, case.body, {401})
        assert body["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}

    await run_fuzz(without_a_token)
    # Both kinds happened: generated queries that answer data and ones that fail cleanly.
    # (Random ids and cursors mostly name nothing, so most answers carry errors.)
    assert statuses["data"] > 0, statuses
    assert statuses["errors"] > 0, statuses


# -- garbage bodies ----------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
QUERIES = st.sampled_from(
    [
        '{ customer(id: "1") { id name } }',
        "query Q($id: ID!) { customer(id: $id) { name invoices { number } } }",
        "query Q($n: Int, $c: String) { invoices(first: $n, after: $c) { nodes { id } } }",
        "query A { __typename } query B { customers { nodes { id } } }",
        '{ _entities(representations: [{__typename: "Customer", id: "2"}]) '
        "{ ... on Customer { name } } }",
        "query E($r: [_Any!]!) { _entities(representations: $r) { __typename } }",
        "{ _service { sdl } }",
        "mutation { nothing }",
        "subscription { customer }",
        "{ __schema { types { name } } }",
        '{ customer(id: "9") { id } }',
        '{ product(id: "abc") { sku } }',
        "",
        "   ",
        "#",
        "{",
        "}}}}",
    ]
)
REQUESTS = st.fixed_dictionaries(
    {},
    optional={
        "query": QUERIES | JSON_VALUES,
        "variables": JSON_VALUES
        | st.dictionaries(st.sampled_from(["id", "n", "c", "r", "x"]), JSON_VALUES)
        | st.text(max_size=30),
        "operationName": st.sampled_from(["Q", "A", "B", "E", "nope", ""]) | JSON_VALUES,
        "extensions": JSON_VALUES,
    },
)


def well_formed(request: Any) -> bool:
    """Whether the view must read ``request`` as a GraphQL request (200) rather than 400."""
    if not isinstance(request, dict):
        return False
    query, variables, name = (request.get(k) for k in ("query", "variables", "operationName"))
    if not isinstance(query, str) or not query.strip():
        return False
    if isinstance(variables, str):
        try:
            variables = json.loads(variables) if variables else None
        except ValueError:
            return False
    if variables is not None and not isinstance(variables, dict):
        return False
    return name is None or isinstance(name, str)


async def test_garbage_requests_answer_400_or_graphql_errors(fleet: Fleet) -> None:
    workers = cycle(fleet.workers)
    raw = st.binary(max_size=200) | st.text(max_size=200).map(str.encode)

    @FUZZ
    @given(request=REQUESTS | JSON_VALUES, bytes_=st.none() | raw)
    def fuzz(request: Any, bytes_: bytes | None) -> None:
        if bytes_ is not None:
            try:
                expect = {200 if well_formed(json.loads(bytes_)) else 400}
            except ValueError:
                expect = {400}
            check(call(next(workers), bytes_), bytes_, expect)
            return
        expect = {200} if well_formed(request) else {400}
        check(post_json(next(workers), request), request, expect)

    await run_fuzz(fuzz)


async def test_get_methods_and_content_types(fleet: Fleet) -> None:
    workers = cycle(fleet.workers)

    @FUZZ
    @given(
        query=QUERIES,
        variables=st.none() | JSON_VALUES.map(json.dumps) | st.text(max_size=10),
        content_type=st.sampled_from(
            ["application/json", "text/plain", "application/graphql", "", "multipart/form-data"]
        ),
    )
    def fuzz(query: str, variables: str | None, content_type: str) -> None:
        params = {"query": query} | ({} if variables is None else {"variables": variables})
        answer = call(next(workers), method="GET", params=params)
        expect = {400}
        if well_formed(params):
            expect = {200, 405} if query.startswith(("mutation", "subscription")) else {200}
        body = check(answer, params, expect)
        if answer.status == 405:
            assert "POST" in messages(body)
        # The same request as a POST body of any declared content type is read as JSON.
        check(call(next(workers), json.dumps(params).encode(), content_type=content_type), params)

    await run_fuzz(fuzz)
    for method in ("PUT", "DELETE", "PATCH"):
        answer = await asyncio.to_thread(call, fleet.workers[0], b"{}", method=method)
        assert answer.status in {404, 405}, (method, answer.status, answer.text[:300])


VARIABLES_QUERY = (
    "query V($id: ID!, $n: Int, $f: CustomerFilter, $r: [_Any!]!) {"
    " customer(id: $id) { name } customers(first: $n, filter: $f) { nodes { id } }"
    " _entities(representations: $r) { __typename } }"
)


async def test_wrong_variable_types_are_graphql_errors(fleet: Fleet) -> None:
    workers = cycle(fleet.workers)
    query = VARIABLES_QUERY

    @FUZZ
    @given(variables=st.dictionaries(st.sampled_from(["id", "n", "f", "r"]), JSON_VALUES))
    def fuzz(variables: dict[str, Any]) -> None:
        answer = post_json(next(workers), {"query": query, "variables": variables})
        check(answer, variables, {200})

    await run_fuzz(fuzz)


# -- the limits --------------------------------------------------------------------------------


def depth_query(depth: int, fragments: bool, introspection: bool) -> str:
    """A valid query of exactly ``depth`` levels: customer → invoices → customer → … → id,
    optionally inside a fragment; or ``__type`` → fields → type → ofType … → name."""
    if introspection:
        if depth < 4:
            return '{ __type(name: "Customer") { name } }'
        body = "name"
        for _ in range(depth - 4):
            body = f"ofType {{ {body} }}"
        return f'{{ __type(name: "Customer") {{ fields {{ type {{ {body} }} }} }} }}'
    body = "id"
    for n in reversed(range(depth - 2)):
        body = f"{('invoices', 'customer')[n % 2]} {{ {body} }}"
    if not fragments:
        return f'{{ customer(id: "1") {{ {body} }} }}'
    return f'{{ customer(id: "1") {{ ...F }} }} fragment F on Customer {{ {body} }}'


async def test_depth_limit(fleet: Fleet) -> None:
    workers = cycle(fleet.workers)

    @settings(FUZZ, max_examples=40)
    @given(depth=st.integers(2, 16), fragments=st.booleans(), introspection=st.booleans())
    def fuzz(depth: int, fragments: bool, introspection: bool) -> None:
        query = depth_query(depth, fragments, introspection)
        body = check(post_json(next(workers), {"query": query}), query, {200})
        limit = 15 if introspection else MAX_DEPTH
        if depth > limit:
            assert body["data"] is None, (query, body)
            assert "depth" in messages(body), (query, body)
        else:
            assert "depth" not in messages(body), (query, body)
            assert "errors" not in body, (query, body)

    await run_fuzz(fuzz)


async def test_alias_limit(fleet: Fleet) -> None:
    workers = cycle(fleet.workers)

    @settings(FUZZ, max_examples=40)
    @given(count=st.integers(0, 70), spread=st.integers(1, 3), nested=st.booleans())
    def fuzz(count: int, spread: int, nested: bool) -> None:
        # ``count`` aliases in a fragment spread ``spread`` times: count * spread aliases.
        per = " ".join(f"a{i}: name" for i in range(count)) or "name"
        if nested:
            fragment = f"fragment F on Invoice {{ customer {{ {per} }} }}"
            spreads = " ".join(f'i{s}: invoice(id: "100") {{ ...F }}' for s in range(spread))
            total = count * spread + spread
        else:
            fragment = f"fragment F on Customer {{ {per} }}"
            spreads = " ".join(f'c{s}: customer(id: "2") {{ ...F }}' for s in range(spread))
            total = count * spread + spread
        query = f"{{ {spreads} }} {fragment}"
        body = check(post_json(next(workers), {"query": query}), query, {200})
        if total > MAX_ALIASES:
            assert body["data"] is None, (total, body)
            assert "alias" in messages(body), (total, body)
        else:
            assert "errors" not in body, (total, query, body)

    await run_fuzz(fuzz)


async def test_token_and_body_limits(fleet: Fleet) -> None:
    workers = cycle(fleet.workers)

    @settings(FUZZ, max_examples=40)
    @given(
        # Within the limit only small documents (up to 300 fields are allowed).
        tokens=st.integers(3, 300) | st.integers(MAX_TOKENS + 1, 3 * MAX_TOKENS),
        pad=st.integers(MAX_BODY - 200, MAX_BODY + 200),
        comment=st.booleans(),
    )
    def fuzz(tokens: int, pad: int, comment: bool) -> None:
        # ``{ __typename __typename … }``: 2 braces + n names (<EOF> is not counted).
        query = "{ " + "__typename " * (tokens - 2) + "}"
        body = check(post_json(next(workers), {"query": query}), tokens, {200})
        if tokens > MAX_TOKENS:
            assert body["data"] is None, (tokens, messages(body))
            assert "token" in messages(body).lower(), (tokens, messages(body))
        else:
            assert body == {"data": {"__typename": "Query"}}, (tokens, messages(body))
        # A body of exactly ``pad`` bytes (padding in a comment or an extra member).
        base = {"query": "{ __typename }", "pad": ""}
        if comment:
            base = {"query": "{ __typename }\n#"}
        room = pad - len(json.dumps(base).encode())
        key = "query" if comment else "pad"
        request = dict(base, **{key: base[key] + "x" * room})
        raw = json.dumps(request).encode()
        assert len(raw) == pad
        answer = call(next(workers), raw)
        body = check(answer, pad, {413} if pad > MAX_BODY else {200})
        if pad <= MAX_BODY:
            assert body == {"data": {"__typename": "Query"}}, (pad, messages(body))

    await run_fuzz(fuzz)
    # Exactly at the token limit, and one over; directives add tokens without adding
    # fields, so the field limit (300) is not what rejects the query.
    for tokens, ok in [(MAX_TOKENS, True), (MAX_TOKENS + 1, False)]:
        with_directive = "__typename @include(if: true) " * 249  # 8 tokens each
        query = "{ " + with_directive + "__typename " * (tokens - 2 - 249 * 8) + "}"
        answer = await asyncio.to_thread(post_json, fleet.workers[0], {"query": query})
        body = check(answer, tokens, {200})
        assert ("errors" not in body) is ok, (tokens, messages(body))
    # Chunked bodies carry no Content-Length and are cut at the limit too.
    big = json.dumps({"query": "{ __typename }", "pad": "x" * (4 * MAX_BODY)}).encode()
    chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))
    resp = await asyncio.to_thread(
        requests.post,
        f"{fleet.workers[1].base}/graphql",
        data=chunks,
        headers={**bearer(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 413, resp.text[:300]
    # A huge body is refused, not read (no 5xx, no hang).
    huge = b'{"query": "{ __typename }", "pad": "' + b"x" * (8 * 1024 * 1024) + b'"}'
    answer = await asyncio.to_thread(call, fleet.workers[0], huge)
    check(answer, "8 MiB", {413})


async def test_explicit_null_first_is_a_client_error(fleet: Fleet) -> None:
    """``first`` is a nullable ``Int`` defaulting to 20; an explicit ``null`` (which GraphQL
    passes to the resolver as ``None``) should mean the default or a client error, not
    ``TypeError`` in ``mesh/graphql/lists.py`` answered as ``internal error``."""
    for query, variables in [
        ("{ customers(first: null) { nodes { id } } }", None),
        ("query L($n: Int) { invoices(first: $n) { nodes { id } } }", {"n": None}),
    ]:
        request = {"query": query, "variables": variables}
        answer = await asyncio.to_thread(post_json, fleet.workers[0], request)
        assert "internal error" not in answer.text, answer.text


async def test_wrong_variable_values_are_client_errors(fleet: Fleet) -> None:
    """A variable value graphql-core cannot coerce is the client's error ("Variable '$id'
    got invalid value []; ID cannot represent value: []"), but ``format_errors`` sees an
    ``original_error`` on it and answers ``internal error`` (logging an ERROR)."""
    query = "query Q($id: ID!, $f: CustomerFilter) { customer(id: $id) { id } "
    query += "customers(filter: $f) { nodes { id } } }"
    for variables in [{"id": []}, {"id": "1", "f": 3}, {"id": {"a": 1}}]:
        request = {"query": query, "variables": variables}
        answer = await asyncio.to_thread(post_json, fleet.workers[1], request)
        assert answer.status == 200
        assert "internal error" not in answer.text, (variables, answer.text)


async def test_workers_logged_no_unexpected_errors(fleet: Fleet) -> None:
    """Runs last: nothing above was an unexpected failure (``internal error`` is logged with
    the exception)."""
    for worker in fleet.workers:
        log = worker.log_path.read_text(errors="replace").splitlines()
        failures = [n for n, line in enumerate(log) if "GraphQL execution failed" in line]
        for start in failures:
            end = next(
                n for n in range(start + 1, len(log)) if not log[n].startswith((" ", "Traceback"))
            )
            shown = "\n".join(log[start : end + 1])
            raise AssertionError(f"an unexpected failure was logged:\n{shown}")
