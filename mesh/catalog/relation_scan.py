"""This worker's part of a relation check: its child records and its relation index entries.

For every reverse relation, the records of the child type in the partitions this worker
actively owns (which parent each points at now, at which version) and the member entries
of the relation index in the partitions it owns. The relation check
(:mod:`mesh.relations_check`) gathers these from every worker and compares them
(:mod:`mesh.catalog.consistency`). Scanning reads every record of those tables: O(entities),
handing the event loop back every few thousand records so the worker keeps serving.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mesh.catalog import record
from mesh.catalog.fold import ReverseRelation
from mesh.context import MeshContext

YIELD_EVERY = 5000


async def relation_report(context: MeshContext, relations: list[ReverseRelation]) -> dict[str, Any]:
    """``{"worker", "stable", "relations": {name: {"child_partitions", "children":
    [[member, version, parent URN | null, tenant]], "index_partitions", "entries": [[parent URN,
    member, version, present]]}}}``. ``stable`` is false when the worker was rebalancing or
    recovering at the start or the end of the scan: the caller must scan again."""
    membership = context.membership
    before = membership.stamp()
    report: dict[str, Any] = {}
    scanned = 0
    for rel in relations:
        children_table = context.catalog.entities[rel.child_type]
        index_table = context.catalog.relations[rel.name]
        children: list[list[Any]] = []
        entries: list[list[Any]] = []
        child_partitions = children_table.owned() if before else []
        index_partitions = index_table.owned() if before else []
        for partition in child_partitions:
            for _, value in children_table.items(partition):
                rec = record.loads(value)
                parent = None if rec["deleted"] else rec["state"].get(rel.field)
                urn = (
                    None
                    if parent is None
                    else context.domain.urn(rec["tenant"], rel.parent_type, str(parent))
                )
                children.append([str(rec["id"]), int(rec["version"]), urn, rec["tenant"]])
                scanned += 1
                if scanned % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        for partition in index_partitions:
            for key, value in index_table.items(partition):
                parent_urn, _, member = key.partition(b"\x00")
                version, present = record.loads(value)
                entries.append([parent_urn.decode(), member.decode(), int(version), present])
                scanned += 1
                if scanned % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        report[rel.name] = {
            "child_partitions": child_partitions,
            "children": children,
            "index_partitions": index_partitions,
            "entries": entries,
        }
    stable = before is not None and membership.stamp() == before
    return {"worker": context.settings.worker_name, "stable": stable, "relations": report}
