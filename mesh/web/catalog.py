"""What the catalog holds: ``/api/v1/catalog/types`` and the fleet-wide entity counts.

``GET /api/v1/catalog/types``::

    {"types": [{"name", "graphql_name", "collection", "source" (the tenant's), "topic",
                "key": {"field", "type"},
                "schema": {"subject", "latest_version", "latest_id"},
                "relations": {"forward": {field: type}, "reverse": {name: {"type", "field"}}},
                "counts": {"live", "deleted"}}],
     "counts": {"complete", "partitions", "counted_partitions", "workers": {name: [p…]}},
     "warnings": [...]}

The latest schema version is asked of the registry; when it cannot answer, the version is
``null`` and ``warnings`` says why (the rest of the answer does not depend on it).

Everything is the caller's tenant's. Counts cover the whole fleet. Each worker counts the
records in the local RocksDB databases of the partitions it actively owns
(``GET /api/v1/internal/counts?tenant=…``); the worker answering asks every other worker of
the group (through the fleet router) and adds the answers up per partition, each partition
counted once. Partitions nobody reported (a worker down or the fleet rebalancing) make
``counts.complete`` false and add a warning. Counting reads every record: O(entities).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import aiohttp

from mesh.auth.middleware import principal_of
from mesh.catalog import record
from mesh.catalog.reader import CatalogReader
from mesh.catalog.router import WORKER_HEADER
from mesh.context import MeshContext
from mesh.errors import UnavailableError
from mesh.runtime.web import Request, Response, View
from mesh.web.entities import json_response, register_entity_views

COUNTS_PATH = "/api/v1/internal/counts"
REGISTRY_TIMEOUT_S = 3.0

PartitionCounts = dict[int, tuple[int, int]]
"""Per partition: (live, deleted) records."""


def count_local(reader: CatalogReader, tenant: str) -> dict[str, PartitionCounts]:
    """Per entity type, ``tenant``'s records of each partition this worker actively owns."""
    counts: dict[str, PartitionCounts] = {}
    for entity_type in reader.domain.entities:
        table = reader.table(entity_type)
        prefix = reader.domain.urn(tenant, entity_type, "").encode()
        per_partition: PartitionCounts = {}
        for partition in table.owned():
            live = deleted = 0
            for _, value in table.items(partition, prefix):
                if record.loads(value).get("deleted"):
                    deleted += 1
                else:
                    live += 1
            per_partition[partition] = (live, deleted)
        counts[entity_type] = per_partition
    return counts


def counts_report(reader: CatalogReader, tenant: str) -> dict[str, Any]:
    """This worker's counts of ``tenant`` as ``/api/v1/internal/counts`` answers them."""
    if reader.recovering():  # partial DBs would undercount: report nothing instead
        return {"worker": reader.worker, "recovering": True, "counts": {}}
    counts = count_local(reader, tenant)
    return {
        "worker": reader.worker,
        "recovering": False,
        "counts": {
            entity_type: {str(p): list(pair) for p, pair in per.items()}
            for entity_type, per in counts.items()
        },
    }


async def fleet_counts(reader: CatalogReader, tenant: str) -> tuple[dict[str, Any], list[str]]:
    """Counts of ``tenant`` per entity type summed over the fleet, the coverage, and
    warnings."""
    reports: list[dict[str, Any]] = [counts_report(reader, tenant)]
    warnings: list[str] = []
    path = f"{COUNTS_PATH}?tenant={quote(tenant, safe='')}"
    for url, answer in await reader.router.ask_all(path):
        if isinstance(answer, UnavailableError):
            warnings.append(f"worker at {url} did not report counts: {answer}")
        elif answer.status != 200:
            warnings.append(f"worker at {url} did not report counts: HTTP {answer.status}")
        else:
            try:
                reports.append(dict(answer.json()))
            except ValueError:
                warnings.append(f"worker at {url} did not report counts: not JSON")
    totals: dict[str, list[int]] = {t: [0, 0] for t in reader.domain.entities}
    seen: dict[str, set[int]] = {t: set() for t in reader.domain.entities}
    workers: dict[str, list[int]] = {}
    for report in reports:
        if report.get("recovering"):
            warnings.append(f"worker {report['worker']} is recovering; its partitions are missing")
        owned: set[int] = set()
        for entity_type, per in report["counts"].items():
            if entity_type not in totals:
                continue  # a worker on another domain config version
            for part, (live, deleted) in per.items():
                partition = int(part)
                owned.add(partition)
                if partition in seen[entity_type]:
                    continue  # reported twice mid-rebalance: count it once
                seen[entity_type].add(partition)
                totals[entity_type][0] += live
                totals[entity_type][1] += deleted
        workers[report["worker"]] = sorted(owned)
    expected = reader.context.settings.topic_partitions
    counted = min((len(s) for s in seen.values()), default=0)
    if counted < expected:
        missing = sorted(set(range(expected)) - set().union(*seen.values()))
        warnings.append(f"counts are incomplete: partitions {missing} were not reported")
    coverage = {
        "complete": counted >= expected,
        "partitions": expected,
        "counted_partitions": counted,
        "workers": workers,
    }
    return {"totals": totals, "coverage": coverage}, warnings


async def latest_schemas(
    reader: CatalogReader, subjects: list[str]
) -> tuple[dict[str, tuple[int | None, int | None]], list[str]]:
    """``(version, id)`` of the latest schema of each subject; ``(None, None)`` + a warning
    when the registry does not know the subject or cannot be reached."""
    settings = reader.context.settings
    base = settings.schema_registry_url.rstrip("/")
    auth = aiohttp.BasicAuth(*settings.registry_auth) if settings.registry_auth else None
    timeout = aiohttp.ClientTimeout(total=REGISTRY_TIMEOUT_S)
    warnings: list[str] = []

    async def one(subject: str) -> tuple[int | None, int | None]:
        url = f"{base}/subjects/{quote(subject, safe='')}/versions/latest"
        async with reader.app.http_client.get(url, timeout=timeout, auth=auth) as resp:
            if resp.status == 404:
                warnings.append(f"schema subject {subject} is not registered yet")
                return None, None
            if resp.status != 200:
                warnings.append(f"schema registry answered {resp.status} for {subject}")
                return None, None
            found = json.loads(await resp.read())
            return int(found["version"]), int(found["id"])

    answers = await asyncio.gather(*(one(s) for s in subjects), return_exceptions=True)
    result: dict[str, tuple[int | None, int | None]] = {}
    unreachable: BaseException | None = None
    for subject, answer in zip(subjects, answers, strict=True):
        if isinstance(answer, BaseException):
            if not isinstance(answer, aiohttp.ClientError | TimeoutError | ValueError | KeyError):
                raise answer
            unreachable = answer
            result[subject] = (None, None)
        else:
            result[subject] = answer
    if unreachable is not None:
        warnings.append(
            f"the schema registry at {base} cannot be reached "
            f"({type(unreachable).__name__}): latest schema versions are unknown"
        )
    return result, warnings


async def types_body(reader: CatalogReader, tenant: str) -> dict[str, Any]:
    """The body of ``/api/v1/catalog/types`` for ``tenant``."""
    domain = reader.domain
    topics = {t: domain.topic(t, tenant) for t in domain.entities}
    (counts, count_warnings), (schemas, schema_warnings) = await asyncio.gather(
        fleet_counts(reader, tenant),
        latest_schemas(reader, [f"{t}-value" for t in topics.values()]),
    )
    types = []
    for name, spec in domain.entities.items():
        subject = f"{topics[name]}-value"
        version, schema_id = schemas[subject]
        live, deleted = counts["totals"][name]
        types.append(
            {
                "name": name,
                "graphql_name": spec.graphql_name,
                "collection": spec.collection,
                "source": next(
                    (s.name for s in domain.entity_sources(name) if s.tenant == tenant), None
                ),
                "topic": topics[name],
                "key": {"field": spec.key, "type": spec.fields[spec.key].type.value},
                "schema": {"subject": subject, "latest_version": version, "latest_id": schema_id},
                "relations": {
                    "forward": {f: s.references for f, s in spec.fields.items() if s.references},
                    "reverse": {
                        r: {"type": rel.entity, "field": rel.field}
                        for r, rel in spec.reverse_relations.items()
                    },
                },
                "counts": {"live": live, "deleted": deleted},
            }
        )
    return {
        "types": types,
        "counts": counts["coverage"],
        "warnings": schema_warnings + count_warnings,
    }


def register_catalog_views(context: MeshContext) -> None:
    """Register the catalog's REST API: entities, relations, types and internal counts."""
    register_entity_views(context)
    app = context.app
    reader = CatalogReader(context)
    headers = {WORKER_HEADER: reader.worker}

    @app.page("/api/v1/catalog/types")
    class Types(View):
        async def get(self, request: Request) -> Response:
            principal = principal_of(request)
            tenant = "" if principal is None else principal.tenant
            return json_response(self, await types_body(reader, tenant), headers=headers)

    @app.page(COUNTS_PATH)
    class Counts(View):
        async def get(self, request: Request) -> Response:
            tenant = request.query.get("tenant", "")
            if not context.domain.has_tenant(tenant):
                body = {"error": {"code": "bad_request", "message": f"unknown tenant {tenant!r}"}}
                return json_response(self, body, status=400, headers=headers)
            return json_response(self, counts_report(reader, tenant), headers=headers)
