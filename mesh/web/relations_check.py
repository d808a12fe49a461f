"""The worker's side of ``mesh relations check``: internal, called by that command.

``GET /api/v1/internal/relations`` → this worker's child records and relation index
entries (:func:`mesh.catalog.relation_scan.relation_report`) plus ``peers`` (the web URL
of every worker of the group) and ``partitions`` (the fleet's count).

``POST /api/v1/internal/relations/repair`` with ``{"ops": [{"relation", "parent",
"member", "version", "present"}, …]}`` sends each as a repair to the relations topic,
keyed by the parent's URN, so the worker owning the parent applies it under the version
guard; answers ``{"sent": n}`` once Kafka has them.
"""

from __future__ import annotations

import json
from typing import Any

from mesh.catalog import record
from mesh.catalog.fold import RelationOp, reverse_relations
from mesh.catalog.ingest import relations_topic_name
from mesh.catalog.relation_scan import relation_report
from mesh.catalog.router import WORKER_HEADER
from mesh.context import MeshContext
from mesh.runtime.partitioning import key_partition
from mesh.runtime.web import Request, Response, View
from mesh.web.entities import json_response

RELATIONS_PATH = "/api/v1/internal/relations"
REPAIR_PATH = "/api/v1/internal/relations/repair"
MAX_OPS = 10_000


def parse_repairs(body: Any, relations: set[str]) -> list[RelationOp]:
    """The repair ops of a request body; ``ValueError`` saying what is wrong."""
    ops = body.get("ops") if isinstance(body, dict) else None
    if not isinstance(ops, list):
        raise ValueError('the body must be {"ops": [...]}')
    if len(ops) > MAX_OPS:
        raise ValueError(f"at most {MAX_OPS} ops per request")
    parsed: list[RelationOp] = []
    for n, op in enumerate(ops):
        try:
            relation, parent, member = str(op["relation"]), str(op["parent"]), str(op["member"])
            version, present = op["version"], op["present"]
        except (KeyError, TypeError):
            raise ValueError(
                f"op {n}: needs relation, parent, member, version and present"
            ) from None
        if relation not in relations:
            raise ValueError(f"op {n}: unknown relation {relation!r}")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError(f"op {n}: version must be a non-negative integer")
        if not isinstance(present, bool):
            raise ValueError(f"op {n}: present must be true or false")
        parsed.append(RelationOp(relation, parent, member, version, present, repair=True))
    return parsed


def register_relations_check_views(context: MeshContext) -> None:
    """Register the two internal views of the relation check."""
    app = context.app
    headers = {WORKER_HEADER: context.settings.worker_name}
    relations = reverse_relations(context.domain)
    names = {r.name for r in relations}
    topic = relations_topic_name(context.settings.app_id)
    partitions = context.settings.topic_partitions

    @app.page(RELATIONS_PATH)
    class Relations(View):
        async def get(self, request: Request) -> Response:
            report = await relation_report(context, relations)
            peers = context.membership.peer_urls()
            body = {**report, "peers": peers, "partitions": partitions}
            return json_response(self, body, headers=headers)

    @app.page(REPAIR_PATH)
    class Repair(View):
        async def post(self, request: Request) -> Response:
            try:
                # Faust's Request type is abstract; at run time it is aiohttp's.
                body = json.loads(await request.read())
                ops = parse_repairs(body, names)
            except ValueError as exc:
                error = {"error": {"code": "bad_request", "message": str(exc)}}
                return json_response(self, error, status=400, headers=headers)
            sent = []
            for op in ops:
                key = op.parent.encode()
                sent.append(
                    await app.producer.send(
                        topic, key, record.dumps(op.as_json()), key_partition(key, partitions),
                        None, None,
                    )
                )  # fmt: skip
            for future in sent:
                await future
            return json_response(self, {"sent": len(ops)}, headers=headers)
