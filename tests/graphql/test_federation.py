"""The Apollo Federation v2 subgraph: ``_service { sdl }`` and ``_entities``.

The SDL tests need no fleet (the schema is built from ``config/domain.yaml`` and executed
directly); one of them composes the SDL with Apollo's own ``@apollo/composition`` (installed
by ``make`` with ``npm ci --prefix tests/graphql/compose``) and fails when it is missing.
The ``_entities`` tests run against a two-worker fleet of their own (app id ``federation``),
so the representations name entities owned by both workers.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import graphene_federation
import pytest
import pytest_asyncio
from graphql import (
    DocumentNode,
    ObjectTypeDefinitionNode,
    SchemaExtensionNode,
    TypeDefinitionNode,
    graphql,
    parse,
    print_ast,
)

from mesh.domain import DomainConfig
from mesh.errors import MeshError
from mesh.graphql import build_schema
from mesh.graphql.lists import PageInfo
from mesh.sources.events import Op
from tests.support.auth import bearer
from tests.support.fleet import TIMEOUT, Fleet, customer, invoice, invoice_item, open_fleet, product
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker

COMPOSE_DIR = Path(__file__).parent / "compose"
ENTITY_TYPES = ("Customer", "Product", "Invoice", "InvoiceItem", "Reservation")
COMPOSE_SCRIPT = """
import { readFileSync } from "node:fs";
import { parse } from "graphql";
import { composeServices } from "@apollo/composition";
const subgraphs = JSON.parse(readFileSync(0, "utf8"));
const result = composeServices(subgraphs.map(
  ([name, sdl]) => ({ name, url: `http://${name}/graphql`, typeDefs: parse(sdl) })));
if (result.errors) {
  for (const error of result.errors) console.error(error.message);
  process.exit(1);
}
console.log(result.supergraphSdl);
"""


async def _sdl(domain: DomainConfig) -> str:
    schema = build_schema(domain).graphql_schema
    result = await graphql(schema, "{ _service { sdl } }", context_value=None)
    assert result.errors is None, result.errors
    assert result.data is not None
    sdl: str = result.data["_service"]["sdl"]
    return sdl


def _objects(document: DocumentNode) -> dict[str, ObjectTypeDefinitionNode]:
    return {
        d.name.value: d for d in document.definitions if isinstance(d, ObjectTypeDefinitionNode)
    }


def _directives(node: Any) -> list[str]:
    return [print_ast(d) for d in node.directives or ()]


async def test_service_sdl_is_a_federation_v2_subgraph(sample_domain: DomainConfig) -> None:
    sdl = await _sdl(sample_domain)
    document = parse(sdl)  # valid SDL (the directive definitions come from the gateway)
    (header,) = [d for d in document.definitions if isinstance(d, SchemaExtensionNode)]
    assert _directives(header) == [
        '@link(url: "https://specs.apollo.dev/federation/v2.5", '
        'import: ["@authenticated", "@key", "@requiresScopes", "@shareable"])'
    ]
    assert sdl.startswith("extend schema @link(")
    objects = _objects(document)
    assert set(ENTITY_TYPES) <= set(objects)
    relations = {"Customer": {"invoices": "[Invoice!]!"},
                 "Product": {"invoiceItems": "[InvoiceItem!]!"},
                 "Invoice": {"items": "[InvoiceItem!]!", "customer": "Customer"},
                 "InvoiceItem": {"product": "Product", "invoice": "Invoice"}}  # fmt: skip
    for name, fields in relations.items():
        types = {f.name.value: print_ast(f.type) for f in objects[name].fields or ()}
        assert {f: types.get(f) for f in fields} == fields, name
    query_fields = {f.name.value for f in objects["Query"].fields or ()}
    assert {"customer", "customers", "invoiceItem", "invoiceItems"} <= query_fields
    names = {d.name.value for d in document.definitions if isinstance(d, TypeDefinitionNode)}
    # Neither the plumbing nor federation's own scalars (a composer would show an
    # undeclared `FieldSet` to the supergraph's clients).
    plumbing = {"_Any", "_Entity", "_Service", "FieldSet", "federation__Scope"}
    assert not names & plumbing, names & plumbing
    assert not query_fields & {"_service", "_entities"}


async def test_service_sdl_has_the_scope_policy_on_customer_email(
    sample_domain: DomainConfig,
) -> None:
    sdl = await _sdl(sample_domain)
    assert '  email: String @requiresScopes(scopes: [["pii:read"]])\n' in sdl
    customer = _objects(parse(sdl))["Customer"]
    (email,) = [f for f in customer.fields or () if f.name.value == "email"]
    assert _directives(email) == ['@requiresScopes(scopes: [["pii:read"]])']


async def test_service_sdl_keys_every_entity_type_by_id(sample_domain: DomainConfig) -> None:
    sdl = await _sdl(sample_domain)
    objects = _objects(parse(sdl))
    entity_names = {spec.graphql_name for spec in sample_domain.entities.values()}
    assert entity_names == set(ENTITY_TYPES)
    for name in entity_names:
        assert _directives(objects[name]) == ['@key(fields: "id")'], name
        assert f'type {name} @key(fields: "id") {{' in sdl, name
    keyed = {name for name, node in objects.items() if node.directives}
    assert keyed == entity_names | {"PageInfo"}  # PageInfo: @shareable
    assert _directives(objects["PageInfo"]) == ["@shareable"]


async def test_service_sdl_requires_authentication_of_every_field_it_answers(
    sample_domain: DomainConfig,
) -> None:
    # Every request to the subgraph is authenticated: a router must refuse the same
    # fields to an unauthenticated caller. Scoped fields need an authenticated caller
    # already; the key is the caller's own (and shared with other subgraphs).
    objects = _objects(parse(await _sdl(sample_domain)))
    for field in objects["Query"].fields or ():
        assert _directives(field) == ["@authenticated"], field.name.value
    for name in ENTITY_TYPES:
        for field in objects[name].fields or ():
            field_name = field.name.value
            expected = {"id": [], "email": ['@requiresScopes(scopes: [["pii:read"]])']}
            assert _directives(field) == expected.get(field_name, ["@authenticated"]), (
                f"{name}.{field_name}"
            )
    # Types reached only through those fields carry no policy of their own.
    for name in ("EntityMeta", "EntitySource", "CustomerConnection", "PageInfo"):
        assert all(not f.directives for f in objects[name].fields or ()), name


async def test_schema_builds_again_with_the_same_sdl(sample_domain: DomainConfig) -> None:
    # graphene-federation marks PageInfo (shared by every build) @shareable; the mark is
    # taken off again, or the next build would refuse it.
    first = await _sdl(sample_domain)
    assert await _sdl(sample_domain) == first
    assert not any(name.startswith("_directive_") for name in vars(PageInfo))


def test_a_directive_left_out_of_the_sdl_stops_the_build(
    sample_domain: DomainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = graphene_federation.requires_scope

    def requires_nothing_on_email(field: Any, **kwargs: Any) -> Any:
        return field  # as if the library had lost the directive on its way to the SDL

    monkeypatch.setattr(graphene_federation, "requires_scope", requires_nothing_on_email)
    with pytest.raises(MeshError, match=r"lacks \[\('requiresScopes'.*Customer\.email"):
        build_schema(sample_domain)
    monkeypatch.setattr(graphene_federation, "requires_scope", real)
    build_schema(sample_domain)


async def _compose(subgraphs: list[tuple[str, str]]) -> str:
    # `make` installs both (Node is needed for Directus anyway): a missing one is a broken
    # install, not a reason to skip the only check that a gateway accepts the SDL.
    node = shutil.which("node")
    assert node is not None, "node is not installed: cannot run @apollo/composition"
    installed = (COMPOSE_DIR / "node_modules" / "@apollo" / "composition").is_dir()
    assert installed, "@apollo/composition is missing: run `make` (npm ci in tests/graphql/compose)"
    process = await asyncio.create_subprocess_exec(
        node, "--input-type=module", "-e", COMPOSE_SCRIPT, cwd=COMPOSE_DIR,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    sent = json.dumps(subgraphs).encode()
    out, err = await asyncio.wait_for(process.communicate(sent), timeout=60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_service_sdl_composes_with_apollo_composition(sample_domain: DomainConfig) -> None:
    supergraph = await _compose([("mesh", await _sdl(sample_domain))])
    for name in ENTITY_TYPES:
        assert f'type {name}\n  @join__type(graph: MESH, key: "id")' in supergraph, name
    # The policies reach the supergraph, for the router to enforce.
    for spec in ("authenticated/v0.1", "requiresScopes/v0.1"):
        assert f'@link(url: "https://specs.apollo.dev/{spec}", for: SECURITY)' in supergraph
    assert '  email: String @requiresScopes(scopes: [["pii:read"]])\n' in supergraph
    assert "  name: String! @authenticated\n" in supergraph
    assert "scalar FieldSet" not in supergraph


OTHER_SUBGRAPH = """
extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key"])
type Customer @key(fields: "id") { id: ID! loyaltyPoints: Int }
type Query { topCustomer: Customer }
"""


async def test_policies_bind_only_this_subgraphs_fields(sample_domain: DomainConfig) -> None:
    # A composer merges a field's directives over the subgraphs defining it: on the
    # shared key or on the type, ours would bind another subgraph's fields too.
    supergraph = await _compose([("mesh", await _sdl(sample_domain)), ("other", OTHER_SUBGRAPH)])
    assert "  loyaltyPoints: Int @join__field(graph: OTHER)\n" in supergraph
    assert "  topCustomer: Customer @join__field(graph: OTHER)\n" in supergraph
    customer = supergraph[supergraph.index("type Customer\n") :]
    customer = customer[: customer.index("\n}")]
    assert "  id: ID!\n" in customer
    assert "@authenticated" not in customer[: customer.index("{")]  # nor on the type


async def test_entities_field_types(sample_domain: DomainConfig) -> None:
    schema = build_schema(sample_domain).graphql_schema
    assert schema.query_type is not None
    field = schema.query_type.fields["_entities"]
    assert str(field.type) == "[_Entity]!"
    assert str(field.args["representations"].type) == "[_Any!]!"
    assert str(schema.query_type.fields["_service"].type) == "_Service!"
    union = schema.get_type("_Entity")
    assert {t.name for t in getattr(union, "types", [])} == set(ENTITY_TYPES)


# ---- against a fleet ------------------------------------------------------------------

APP_ID = "federation"
PARTITIONS = 4
ENTITIES_QUERY = """
query Entities($representations: [_Any!]!) {
  _entities(representations: $representations) {
    __typename
    ... on Customer { id name invoices { id } }
    ... on Product { id sku price }
    ... on Invoice { id number customer { name } }
    ... on InvoiceItem { id quantity product { sku } }
  }
}
"""


@pytest_asyncio.fixture(scope="module")
async def fleet(
    sample_domain: DomainConfig, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    """Broker, registry, the entity topics and two ready workers of ``federation``."""
    root = tmp_path_factory.mktemp("federation")
    async with open_fleet(sample_domain, root, APP_ID, PARTITIONS, ["fed-a", "fed-b"]) as fleet:
        yield fleet


async def post(worker: MeshWorker, query: str, variables: dict[str, Any] | None = None) -> Any:
    """``POST /graphql`` with ``X-Mesh-Debug: batches``; the JSON answer (status 200)."""
    body = {"query": query, "variables": variables}
    async with (
        aiohttp.ClientSession(headers=bearer()) as http,
        http.post(f"{worker.base}/graphql", json=body, headers={"X-Mesh-Debug": "batches"}) as resp,
    ):
        assert resp.status == 200
        return json.loads(await resp.read())


def rep(typename: str, entity_id: object) -> dict[str, Any]:
    return {"__typename": typename, "id": entity_id}


async def test_entities_resolve_in_order_in_one_batch_per_owner(fleet: Fleet) -> None:
    for pid in range(1, 5):
        await fleet.send("product", pid, 100 + pid, product(f"p{pid}", "1.50"), Op.CREATE)
    for cid in range(1, 5):
        await fleet.send("customer", cid, 110 + cid, customer(f"C{cid}"), Op.CREATE)
    for inv in range(10, 14):
        await fleet.send("invoice", inv, 120 + inv, invoice(f"F-{inv}", inv - 9), Op.CREATE)
    for item in range(100, 104):
        await fleet.send("invoice_item", item, 200 + item, invoice_item(10, 1, 2), Op.CREATE)
    await fleet.send("customer", 9, 150, customer("Gone"), Op.CREATE)
    await fleet.send("customer", 9, 151, None)  # deleted: null

    representations: list[dict[str, Any]] = []
    expected: list[Any] = []
    for n in range(1, 5):  # interleaved types, so the order is really kept
        representations += [rep("InvoiceItem", str(99 + n)), rep("Customer", str(n)),
                             rep("Product", n), rep("Invoice", str(9 + n))]  # fmt: skip
        expected += [
            {"__typename": "InvoiceItem", "id": str(99 + n), "quantity": 2,
             "product": {"sku": "p1"}},
            {"__typename": "Customer", "id": str(n), "name": f"C{n}",
             "invoices": [{"id": str(9 + n)}]},
            {"__typename": "Product", "id": str(n), "sku": f"p{n}", "price": "1.50"},
            {"__typename": "Invoice", "id": str(9 + n), "number": f"F-{9 + n}",
             "customer": {"name": f"C{n}"}},
        ]  # fmt: skip
    representations += [rep("Customer", "9"), rep("Product", "777"), rep("Customer", "1")]
    expected += [None, None, expected[1]]
    variables = {"representations": representations}

    for worker in fleet.workers:
        last: list[Any] = []

        async def answered(w: MeshWorker = worker, last: list[Any] = last) -> bool:
            last[:] = [await post(w, ENTITIES_QUERY, variables)]
            return bool(last[0].get("data") == {"_entities": expected})

        def shown(last: list[Any] = last) -> str:
            return f"_entities to answer {expected}: {last}"

        await wait_until(answered, timeout=TIMEOUT, what=shown)
        answer = last[0]
        assert "errors" not in answer, answer
        batches = answer["extensions"]["batches"]
        # The 19 representations (18 distinct) are round 1: one batch per owner.
        first = [b for b in batches if b["round"] == 1]
        assert set(Counter(b["owner"] for b in first).values()) == {1}, batches
        assert sum(b["keys"] for b in first) == 18, batches
        assert {b["kind"] for b in first} == {"local", "remote"}, batches  # on both workers
        names = {n for b in first for n in b["names"]}
        assert names == {"customer", "product", "invoice", "invoice_item"}, batches
        # Then the nested fields, a level at a time, again one batch per owner and round.
        assert set(Counter((b["round"], b["owner"]) for b in batches).values()) == {1}
        assert max(b["round"] for b in batches) <= 3, batches


async def test_representations_inline_and_key_types(fleet: Fleet) -> None:
    a, _ = fleet.workers
    query = """{ _entities(representations: [
        {__typename: "Product", id: 2}, {__typename: "Product", id: "3", extra: [1]}]) {
        ... on Product { sku } } }"""
    answer = await post(a, query)
    assert answer.get("data") == {"_entities": [{"sku": "p2"}, {"sku": "p3"}]}, answer
    empty = await post(a, "{ _entities(representations: []) { __typename } }")
    assert empty == {"data": {"_entities": []}, "extensions": {"batches": []}}


@pytest.mark.parametrize(
    ("representation", "message"),
    [
        ({"__typename": "Nope", "id": "1"}, "representation 1: 'Nope' is not an entity type"),
        ({"id": "1"}, "representation 1 has no __typename"),
        ({"__typename": "Customer"}, "representation 1 (Customer) has no 'id'"),
        ({"__typename": "Customer", "id": None}, "representation 1 (Customer) has no 'id'"),
        ({"__typename": "Customer", "id": "abc"}, "invalid customer id 'abc'"),
        ("Customer:1", "representation 1 is not an object"),
    ],
)
async def test_bad_representations_are_clear_errors(
    fleet: Fleet, representation: Any, message: str
) -> None:
    a, _ = fleet.workers
    variables = {"representations": [rep("Customer", "1"), representation]}
    answer = await post(a, ENTITIES_QUERY, variables)
    assert answer["data"] is None, answer
    (error,) = answer["errors"]
    assert message in error["message"], answer
    assert error["path"] == ["_entities"]
    assert answer["extensions"]["batches"] == []  # refused before any read
