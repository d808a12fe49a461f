"""Every route of the registry over real HTTP, with Confluent's exact response bodies."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from mesh_tooling.registry import CONTENT_TYPE

from tests.registry.conftest import Api, RegistryServer, db_counts, fld, record

USER = record("User", fld("id", "long"), fld("name", "string"), namespace="acme")
USER_V2 = record(
    "User",
    fld("id", "long"),
    fld("name", "string"),
    fld("email", ["null", "string"], default=None),
    namespace="acme",
)
ORDER = record("Order", fld("id", "long"))


def text(schema: Any) -> str:
    return json.dumps(schema)


def error(code: int, message: str) -> dict[str, Any]:
    return {"error_code": code, "message": message}


def test_root_and_schema_types(api: Api) -> None:
    root = api("GET", "/")
    assert (root.status_code, root.json()) == (200, {})
    assert root.headers["Content-Type"] == CONTENT_TYPE
    types = api("GET", "/schemas/types")
    assert (types.status_code, types.json()) == (200, ["AVRO"])


def test_register_then_read_back_through_every_read_route(api: Api) -> None:
    reply = api.register("users-value", USER)
    assert (reply.status_code, reply.json()) == (200, {"id": 1})
    assert reply.headers["Content-Type"] == CONTENT_TYPE

    version_body = {"subject": "users-value", "version": 1, "id": 1, "schema": text(USER)}
    assert api("GET", "/subjects").json() == ["users-value"]
    assert api("GET", "/subjects/users-value/versions").json() == [1]
    for version in ("1", "latest", "-1"):
        assert api("GET", f"/subjects/users-value/versions/{version}").json() == version_body
    assert api("GET", "/subjects/users-value/versions/1/schema").json() == USER
    assert api("GET", "/schemas/ids/1").json() == {"schema": text(USER)}
    assert api("GET", "/schemas/ids/1?subject=users-value&format=").json() == {"schema": text(USER)}
    assert api("GET", "/schemas/ids/1/schema").json() == USER
    assert api("GET", "/schemas/ids/1/versions").json() == [
        {"subject": "users-value", "version": 1}
    ]
    assert api("GET", "/schemas/ids/1/subjects").json() == ["users-value"]


def test_every_route_answers_with_a_trailing_slash_too(api: Api) -> None:
    assert api.register("s", USER).json() == {"id": 1}
    body = {"schema": text(USER)}
    calls: list[tuple[str, str, Any]] = [
        ("GET", "/schemas/types", None),
        ("GET", "/subjects", None),
        ("GET", "/subjects/s/versions", None),
        ("POST", "/subjects/s/versions", body),
        ("GET", "/subjects/s/versions/1", None),
        ("GET", "/subjects/s/versions/latest/schema", None),
        ("POST", "/subjects/s", body),
        ("GET", "/schemas/ids/1", None),
        ("GET", "/schemas/ids/1/schema", None),
        ("GET", "/schemas/ids/1/versions", None),
        ("GET", "/schemas/ids/1/subjects", None),
        ("POST", "/compatibility/subjects/s/versions/latest", body),
        ("POST", "/compatibility/subjects/s/versions", body),
        ("PUT", "/config", {"compatibility": "BACKWARD"}),
        ("GET", "/config", None),
        ("PUT", "/config/s", {"compatibility": "FULL"}),
        ("GET", "/config/s", None),
    ]
    for method, path, payload in calls:
        plain = api(method, path, json=payload)
        slashed = api(method, path + "/", json=payload)
        assert (slashed.status_code, slashed.json()) == (200, plain.json()), path
    assert api("DELETE", "/config/s/").json() == {"compatibilityLevel": "FULL"}
    assert api("DELETE", "/subjects/s/versions/1/").json() == 1
    assert api("DELETE", "/subjects/s/versions/1/?permanent=true").json() == 1
    assert api.register("t", ORDER).json() == {"id": 2}
    assert api("DELETE", "/subjects/t/").json() == [1]
    assert api("DELETE", "/config/").json() == {"compatibilityLevel": "BACKWARD"}


def test_same_schema_reformatted_gets_the_same_id_and_no_new_version(api: Api) -> None:
    assert api.register("users-value", USER).json() == {"id": 1}
    reformatted = json.dumps(
        {
            "namespace": "acme",
            "fields": [
                {"type": "long", "name": "id"},
                {"type": {"type": "string"}, "name": "name"},
            ],
            "name": "User",
            "type": "record",
        },
        indent=2,
    )
    assert api.register("users-value", reformatted).json() == {"id": 1}
    assert api.register("users-value", record("acme.User", *USER["fields"])).json() == {"id": 1}
    assert api("GET", "/subjects/users-value/versions").json() == [1]


def test_same_schema_under_two_subjects_shares_its_id(api: Api) -> None:
    assert api.register("a-value", USER).json() == {"id": 1}
    assert api.register("b-value", ORDER).json() == {"id": 2}
    api("PUT", "/config/b-value", json={"compatibility": "NONE"})  # Order -> User is a new type
    assert api.register("b-value", USER).json() == {"id": 1}
    assert api("GET", "/subjects/b-value/versions/2").json()["id"] == 1
    assert api("GET", "/schemas/ids/1/versions").json() == [
        {"subject": "a-value", "version": 1},
        {"subject": "b-value", "version": 2},
    ]


def test_lookup_a_schema_under_a_subject(api: Api) -> None:
    api.register("users-value", USER)
    api.register("users-value", USER_V2)
    found = api("POST", "/subjects/users-value", json={"schema": text(USER)})
    assert (found.status_code, found.json()) == (
        200,
        {"subject": "users-value", "version": 1, "id": 1, "schema": text(USER)},
    )
    missing_schema = api("POST", "/subjects/users-value", json={"schema": text(ORDER)})
    assert (missing_schema.status_code, missing_schema.json()) == (
        404,
        error(40403, "Schema not found"),
    )
    missing_subject = api("POST", "/subjects/nobody", json={"schema": text(USER)})
    assert (missing_subject.status_code, missing_subject.json()) == (
        404,
        error(40401, "Subject 'nobody' not found."),
    )
    # confluent-kafka spells booleans the Python way in this query string
    api("DELETE", "/subjects/users-value/versions/1")
    lookup = api("POST", "/subjects/users-value?normalize=False", json={"schema": text(USER)})
    assert lookup.json()["error_code"] == 40403
    deleted = api("POST", "/subjects/users-value?deleted=True", json={"schema": text(USER)})
    assert (deleted.status_code, deleted.json()["version"]) == (200, 1)


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/subjects/nope/versions", 404, error(40401, "Subject 'nope' not found.")),
        ("/subjects/nope/versions/1", 404, error(40401, "Subject 'nope' not found.")),
        ("/subjects/users-value/versions/7", 404, error(40402, "Version 7 not found.")),
        ("/subjects/users-value/versions/7/schema", 404, error(40402, "Version 7 not found.")),
        ("/schemas/ids/99", 404, error(40403, "Schema 99 not found")),
        ("/schemas/ids/99/schema", 404, error(40403, "Schema 99 not found")),
        ("/schemas/ids/99/versions", 404, error(40403, "Schema 99 not found")),
        ("/schemas/ids/99/subjects", 404, error(40403, "Schema 99 not found")),
        ("/schemas/ids/abc", 404, error(404, "HTTP 404 Not Found")),
        ("/no/such/route", 404, error(404, "HTTP 404 Not Found")),
        (
            "/config/users-value",
            404,
            error(
                40408,
                "Subject 'users-value' does not have subject-level compatibility configured",
            ),
        ),
    ],
)
def test_not_found_bodies(api: Api, path: str, status: int, body: dict[str, Any]) -> None:
    api.register("users-value", USER)
    reply = api("GET", path)
    assert (reply.status_code, reply.json()) == (status, body)
    assert reply.headers["Content-Type"] == CONTENT_TYPE


def test_method_not_allowed(api: Api) -> None:
    reply = api("PATCH", "/subjects")
    assert (reply.status_code, reply.json()) == (405, error(405, "HTTP 405 Method Not Allowed"))


@pytest.mark.parametrize("version", ["0", "abc", "2147483648", "-2", "1.5"])
def test_invalid_versions_get_42202(api: Api, version: str) -> None:
    api.register("users-value", USER)
    expected = error(
        42202,
        f"The specified version '{version}' is not a valid version id. Allowed values are "
        'between [1, 2^31-1] and the string "latest"',
    )
    for method, path in (
        ("GET", f"/subjects/users-value/versions/{version}"),
        ("DELETE", f"/subjects/users-value/versions/{version}"),
    ):
        reply = api(method, path)
        assert (reply.status_code, reply.json()) == (422, expected)
    reply = api(
        "POST",
        f"/compatibility/subjects/users-value/versions/{version}",
        json={"schema": text(USER)},
    )
    assert (reply.status_code, reply.json()) == (422, expected)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"schema": "{not json"}, "Invalid schema: schema is not valid JSON (Expecting property "
         "name enclosed in double quotes: line 1 column 2 (char 1))"),
        ({"schema": text({"type": "record", "name": "R"})},
         "Invalid schema: record 'R' has no 'fields' array"),
        ({"schema": text(record("R", fld("a", "Nope")))}, "Invalid schema: unknown type 'Nope'"),
        ({}, "Invalid schema: Empty schema"),
        ({"schema": ""}, "Invalid schema: Empty schema"),
        ({"schema": text(USER), "schemaType": "JSON"},
         "Invalid schema type 'JSON': this registry supports AVRO only"),
        ({"schema": text(USER), "references": [{"name": "x", "subject": "nope", "version": 1}]},
         "Invalid schema: reference 'x' to subject 'nope' version 1 not found"),
    ],
)  # fmt: skip
def test_invalid_schemas_get_42201_on_every_schema_route(
    api: Api, body: dict[str, Any], message: str
) -> None:
    api.register("users-value", USER)
    for path in (
        "/subjects/users-value/versions",
        "/subjects/users-value",
        "/compatibility/subjects/users-value/versions/latest",
    ):
        reply = api("POST", path, json=body)
        assert (reply.status_code, reply.json()) == (422, error(42201, message)), path


def test_verbose_compatibility_check_reports_an_invalid_schema_as_a_message(api: Api) -> None:
    api.register("users-value", USER)
    reply = api(
        "POST",
        "/compatibility/subjects/users-value/versions/latest?verbose=true",
        json={"schema": '"Nope"'},
    )
    assert (reply.status_code, reply.json()) == (
        200,
        {"is_compatible": False, "messages": ["Invalid schema: unknown type 'Nope'"]},
    )


@pytest.mark.parametrize(
    ("data", "content_type", "status", "message"),
    [
        ("{not json", "application/json", 400, "Malformed JSON in request body: Expecting "
         "property name enclosed in double quotes: line 1 column 2 (char 1)"),
        ("", CONTENT_TYPE, 400,
         "Malformed JSON in request body: Expecting value: line 1 column 1 (char 0)"),
        ('["schema"]', "application/vnd.schemaregistry+json", 400,
         "The request body must be a JSON object"),
        ('{"schema": 5}', CONTENT_TYPE, 400,
         "Field 'schema' must be a string holding the schema's JSON"),
        ('{"schema": "\\"int\\"", "references": {}}', CONTENT_TYPE, 400,
         "Field 'references' must be a list of {name, subject, version}"),
        ('{"schema": "\\"int\\""}', "text/plain", 415, "HTTP 415 Unsupported Media Type"),
    ],
)  # fmt: skip
def test_malformed_bodies(
    api: Api, data: str, content_type: str, status: int, message: str
) -> None:
    reply = api("POST", "/subjects/s/versions", data=data, headers={"Content-Type": content_type})
    assert (reply.status_code, reply.json()) == (status, error(status, message))


def test_no_content_type_is_read_as_json(api: Api) -> None:
    reply = api("POST", "/subjects/s/versions", data=json.dumps({"schema": '"int"'}).encode())
    assert (reply.status_code, reply.json()) == (200, {"id": 1})


def test_nothing_is_stored_when_a_request_fails(api: Api, registry: RegistryServer) -> None:
    assert api.register("users-value", USER).json() == {"id": 1}
    before = db_counts(registry.db_path)
    assert before == {"schemas": 1, "subject_versions": 1, "config": 0}
    incompatible = record("User", fld("id", "string"), namespace="acme")
    failures = [
        api.register("users-value", incompatible),
        api.register("users-value", "{not json"),
        api.register("other", {"type": "record", "name": "R"}),
        api.register("other", USER, references=[{"name": "x", "subject": "nope", "version": 1}]),
        api("POST", "/subjects/other/versions", data="{", headers={"Content-Type": CONTENT_TYPE}),
        api("PUT", "/config", json={"compatibility": "SIDEWAYS"}),
        api("PUT", "/config/other", json={}),
        api("DELETE", "/subjects/users-value?permanent=true"),
        api("DELETE", "/subjects/users-value/versions/1?permanent=true"),
    ]
    assert [f.status_code for f in failures] == [409, 422, 422, 422, 400, 422, 422, 404, 404]
    assert db_counts(registry.db_path) == before
    assert api("GET", "/subjects").json() == ["users-value"]
    assert api("GET", "/config").json() == {"compatibilityLevel": "BACKWARD"}
    # the failed attempts did not use up ids or versions
    assert api.register("users-value", USER_V2).json() == {"id": 2}
    assert api("GET", "/subjects/users-value/versions").json() == [1, 2]


def test_config_routes(api: Api) -> None:
    assert api("GET", "/config").json() == {"compatibilityLevel": "BACKWARD"}
    assert api("PUT", "/config", json={"compatibility": "full"}).json() == {"compatibility": "FULL"}
    assert api("GET", "/config").json() == {"compatibilityLevel": "FULL"}

    not_configured = error(
        40408, "Subject 's' does not have subject-level compatibility configured"
    )
    reply = api("GET", "/config/s")
    assert (reply.status_code, reply.json()) == (404, not_configured)
    assert api("GET", "/config/s?defaultToGlobal=true").json() == {"compatibilityLevel": "FULL"}
    assert api("PUT", "/config/s", json={"compatibilityLevel": "NONE"}).json() == {
        "compatibility": "NONE"
    }
    assert api("GET", "/config/s").json() == {"compatibilityLevel": "NONE"}
    assert api("GET", "/config/s?defaultToGlobal=true").json() == {"compatibilityLevel": "NONE"}

    invalid = error(
        42203,
        "Invalid compatibility level. Valid values are none, backward, forward, full, "
        "backward_transitive, forward_transitive, and full_transitive",
    )
    for body in ({"compatibility": "SIDEWAYS"}, {}, {"compatibility": 3}):
        for path in ("/config", "/config/s"):
            reply = api("PUT", path, json=body)
            assert (reply.status_code, reply.json()) == (422, invalid)

    assert api("DELETE", "/config/s").json() == {"compatibilityLevel": "NONE"}
    reply = api("DELETE", "/config/s")
    assert (reply.status_code, reply.json()) == (404, not_configured)
    assert api("DELETE", "/config").json() == {"compatibilityLevel": "FULL"}
    assert api("GET", "/config").json() == {"compatibilityLevel": "BACKWARD"}


def test_soft_and_hard_delete_of_versions(api: Api) -> None:
    api.register("s", USER)
    api.register("s", USER_V2)

    assert api("DELETE", "/subjects/s/versions/1").json() == 1
    assert api("GET", "/subjects/s/versions").json() == [2]
    assert api("GET", "/subjects/s/versions?deleted=true").json() == [1, 2]
    assert api("GET", "/subjects/s/versions?deleted_only=true").json() == [1]
    gone = api("GET", "/subjects/s/versions/1")
    assert (gone.status_code, gone.json()) == (404, error(40402, "Version 1 not found."))
    assert api("GET", "/subjects/s/versions/1?deleted=true").json()["id"] == 1
    assert api("GET", "/schemas/ids/1").json() == {"schema": text(USER)}  # still decodable
    assert api("GET", "/schemas/ids/1/versions").json() == []
    assert api("GET", "/schemas/ids/1/versions?deleted=true").json() == [
        {"subject": "s", "version": 1}
    ]

    twice = api("DELETE", "/subjects/s/versions/1")
    assert (twice.status_code, twice.json()) == (
        404,
        error(
            40406,
            "Subject 's' Version 1 was soft deleted.Set permanent=true to delete permanently",
        ),
    )
    live = api("DELETE", "/subjects/s/versions/2?permanent=true")
    assert (live.status_code, live.json()) == (
        404,
        error(
            40407,
            "Subject 's' Version 2 was not deleted first before being permanently deleted",
        ),
    )
    assert api("DELETE", "/subjects/s/versions/1?permanent=true").json() == 1
    assert api("GET", "/subjects/s/versions?deleted=true").json() == [2]
    hard = api("GET", "/schemas/ids/1")
    assert (hard.status_code, hard.json()) == (404, error(40403, "Schema 1 not found"))

    # registering it again revives the same id, as a new version
    assert api.register("s", USER).json() == {"id": 1}
    assert api("GET", "/subjects/s/versions").json() == [2, 3]
    assert api("DELETE", "/subjects/s/versions/latest").json() == 3
    missing = api("DELETE", "/subjects/s/versions/9")
    assert (missing.status_code, missing.json()) == (404, error(40402, "Version 9 not found."))


def test_soft_and_hard_delete_of_subjects(api: Api) -> None:
    api.register("s", USER)
    api.register("s", USER_V2)
    api("PUT", "/config/s", json={"compatibility": "NONE"})
    api.register("keep", ORDER)

    early = api("DELETE", "/subjects/s?permanent=true")
    assert (early.status_code, early.json()) == (
        404,
        error(40405, "Subject 's' was not deleted first before being permanently deleted"),
    )
    assert api("DELETE", "/subjects/s").json() == [1, 2]
    assert api("GET", "/subjects").json() == ["keep"]
    assert api("GET", "/subjects?deleted=true").json() == ["keep", "s"]
    assert api("GET", "/subjects?deleted_only=true").json() == ["s"]
    versions = api("GET", "/subjects/s/versions")
    assert (versions.status_code, versions.json()) == (404, error(40401, "Subject 's' not found."))
    assert api("GET", "/config/s").status_code == 404  # its config went with it
    assert api("GET", "/schemas/ids/2").json() == {"schema": text(USER_V2)}

    again = api("DELETE", "/subjects/s")
    assert (again.status_code, again.json()) == (
        404,
        error(40404, "Subject 's' was soft deleted.Set permanent=true to delete permanently"),
    )
    assert api("DELETE", "/subjects/s?permanent=true").json() == [1, 2]
    assert api("GET", "/subjects?deleted=true").json() == ["keep"]
    nothing = api("DELETE", "/subjects/s")
    assert (nothing.status_code, nothing.json()) == (404, error(40401, "Subject 's' not found."))

    # a subject re-created after a hard delete starts again at version 1, same id
    assert api.register("s", USER_V2).json() == {"id": 2}
    assert api("GET", "/subjects/s/versions").json() == [1]


def test_subject_listing_filters_and_pages(api: Api) -> None:
    for subject in ("a-key", "a-value", "b-value"):
        api.register(subject, USER)
    assert api("GET", "/subjects?subjectPrefix=a-").json() == ["a-key", "a-value"]
    assert api("GET", "/subjects?offset=1&limit=1").json() == ["a-value"]
    assert api("GET", "/subjects?offset=0&limit=-1").json() == ["a-key", "a-value", "b-value"]
    bad = api("GET", "/subjects?limit=many")
    assert (bad.status_code, bad.json()) == (
        400,
        error(400, "Query parameter 'limit' must be an integer, got 'many'"),
    )


def test_compatibility_route(api: Api) -> None:
    api.register("s", USER)
    api.register("s", USER_V2)
    needs_age = record("User", *USER["fields"], fld("age", "int"), namespace="acme")
    url = "/compatibility/subjects/s/versions"

    ok = api("POST", f"{url}/latest", json={"schema": text(USER_V2)})
    assert (ok.status_code, ok.json()) == (200, {"is_compatible": True})
    bad = api("POST", f"{url}/1?verbose=true", json={"schema": text(needs_age)})
    assert bad.json() == {
        "is_compatible": False,
        "messages": [
            "READER_FIELD_MISSING_DEFAULT_VALUE at /fields/2: reader field 'age' has no default "
            "and the writer lacks it (new schema reading version 1)"
        ],
    }
    assert api("POST", f"{url}/1", json={"schema": text(needs_age)}).json() == {
        "is_compatible": False
    }
    assert api("POST", f"{url}?verbose=true", json={"schema": text(USER)}).json() == {
        "is_compatible": True,
        "messages": [],
    }
    missing = api("POST", f"{url}/5", json={"schema": text(USER)})
    assert (missing.status_code, missing.json()) == (404, error(40402, "Version 5 not found."))
    # nothing registered: "latest" accepts anything, a given version does not exist
    fresh = api("POST", "/compatibility/subjects/fresh/versions/latest", json={"schema": '"int"'})
    assert fresh.json() == {"is_compatible": True}
    fresh_v1 = api("POST", "/compatibility/subjects/fresh/versions/1", json={"schema": '"int"'})
    assert (fresh_v1.status_code, fresh_v1.json()) == (404, error(40402, "Version 1 not found."))


def test_references_are_resolved_stored_and_returned(api: Api) -> None:
    address = record("Address", fld("city", "string"), namespace="geo")
    assert api.register("address", address).json() == {"id": 1}
    user = record("User", fld("id", "long"), fld("home", "geo.Address"))
    refs = [{"name": "geo.Address", "subject": "address", "version": -1}]
    pinned = [{"name": "geo.Address", "subject": "address", "version": 1}]

    assert api.register("user", user, references=refs).json() == {"id": 2}
    assert api.register("user", user, references=pinned).json() == {"id": 2}
    assert api("GET", "/subjects/user/versions/1").json() == {
        "subject": "user",
        "version": 1,
        "id": 2,
        "schema": text(user),
        "references": pinned,
    }
    assert api("GET", "/schemas/ids/2").json() == {"schema": text(user), "references": pinned}
    found = api("POST", "/subjects/user", json={"schema": text(user), "references": pinned})
    assert found.json()["id"] == 2

    without = api.register("user", user)
    assert (without.status_code, without.json()) == (
        422,
        error(42201, "Invalid schema: unknown type 'geo.Address'"),
    )


def test_each_request_is_logged_once_at_debug(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mesh_tooling.registry.server")
    api("GET", "/subjects?deleted=true")
    api("GET", "/subjects/nope/versions")
    lines = [r.getMessage() for r in caplog.records if r.name == "mesh_tooling.registry.server"]
    assert [line.rsplit(" (", 1)[0] for line in lines] == [
        "GET /subjects?deleted=true -> 200",
        "GET /subjects/nope/versions -> 404",
    ]
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name.startswith("mesh."))
