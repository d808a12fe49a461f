"""The GraphQL schema derived from the shipped domain config: names, types and relations."""

from __future__ import annotations

from graphql import GraphQLObjectType, GraphQLSchema, get_named_type, print_type

from mesh.domain import DomainConfig
from mesh.graphql import build_schema


def _schema(domain: DomainConfig) -> GraphQLSchema:
    schema: GraphQLSchema = build_schema(domain).graphql_schema
    return schema


def _object(schema: GraphQLSchema, name: str) -> GraphQLObjectType:
    found = schema.get_type(name)
    assert isinstance(found, GraphQLObjectType), name
    return found


def test_one_type_per_entity_named_by_its_graphql_name(sample_domain: DomainConfig) -> None:
    schema = _schema(sample_domain)
    for spec in sample_domain.entities.values():
        _object(schema, spec.graphql_name)
    assert schema.query_type is not None
    roots = schema.query_type.fields
    assert set(roots) >= {"customer", "product", "invoice", "invoiceItem"}
    assert set(roots) >= {"customers", "products", "invoices", "invoiceItems"}
    assert str(roots["invoiceItems"].type) == "InvoiceItemConnection!"
    assert str(roots["invoices"].args["filter"].type) == "InvoiceFilter"
    assert str(roots["invoiceItem"].args["id"].type) == "ID!"
    assert str(roots["invoiceItem"].type) == "InvoiceItem"  # nullable: unknown id → null


def test_fields_are_camel_cased_and_typed(sample_domain: DomainConfig) -> None:
    item = _object(_schema(sample_domain), "InvoiceItem")
    types = {name: str(field.type) for name, field in item.fields.items()}
    assert types == {
        "meta": "EntityMeta!",
        "id": "ID!",
        "invoice": "Invoice",
        "product": "Product",
        "quantity": "Int!",
        "unitPrice": "String!",  # decimals stay exact as strings
        "sagaKey": "String",
        "dateCreated": "String",  # timestamps as ISO 8601 strings
        "dateUpdated": "String",
    }


def test_relations_both_ways(sample_domain: DomainConfig) -> None:
    schema = _schema(sample_domain)
    assert str(_object(schema, "Invoice").fields["customer"].type) == "Customer"
    assert str(_object(schema, "Customer").fields["invoices"].type) == "[Invoice!]!"
    assert str(_object(schema, "Invoice").fields["items"].type) == "[InvoiceItem!]!"
    assert str(_object(schema, "Product").fields["invoiceItems"].type) == "[InvoiceItem!]!"
    assert str(_object(schema, "Product").fields["reservations"].type) == "[Reservation!]!"


def test_metadata_type(sample_domain: DomainConfig) -> None:
    schema = _schema(sample_domain)
    meta = get_named_type(_object(schema, "Customer").fields["meta"].type)
    printed = print_type(meta)
    for name in ("urn", "version", "lastChanged", "deleted", "source", "schema"):
        assert f"  {name}" in printed
    source = _object(schema, "EntitySource")
    assert set(source.fields) >= {"system", "instance", "collection", "position"}
