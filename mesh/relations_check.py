"""``mesh relations check [--repair]``: recompute every reverse relation from the entity
records of the whole fleet and report (and repair) every difference from the indexes.

1. Scan: ask one worker (``--url``) for its part and the web URLs of its peers, then every
   peer (``GET /api/v1/internal/relations``). A scan counts only when every worker was
   steady (not rebalancing or recovering) and every partition of every child table and
   relation index was reported exactly once; otherwise it is taken again.
2. Compare (:func:`mesh.catalog.consistency.differences`). On a live fleet a difference
   may be a change in flight, so a second scan follows ``--settle`` seconds later and
   only the differences both scans found identically are reported.
3. With ``--repair``, each reported difference becomes a versioned relation change sent
   to its owner through one worker (``POST /api/v1/internal/relations/repair``); the
   version guard keeps it from overwriting anything newer. Then the fleet is scanned
   until those differences are gone or ``--wait`` seconds have passed.

Exit status: 0 when no difference remains, 1 when some do, 3 when the fleet could not be
scanned whole (workers down or rebalancing throughout).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from yarl import URL

from mesh.auth.peer import PeerSigner
from mesh.catalog.consistency import ChildRef, Difference, IndexEntry, confirmed, differences
from mesh.errors import MeshError
from mesh.web.relations_check import RELATIONS_PATH, REPAIR_PATH

REQUEST_TIMEOUT_S = 120.0
"""A worker scans every record it owns before answering."""
REPAIR_BATCH = 1000


class FleetScanError(MeshError):
    """The fleet could not be scanned whole (retriable: it may settle)."""

    retriable = True


@dataclass
class Scan:
    """One consistent scan of the fleet."""

    workers: list[str]
    partitions: int
    children: list[ChildRef] = field(default_factory=list)
    entries: list[IndexEntry] = field(default_factory=list)

    def differences(self) -> list[Difference]:
        return differences(self.children, self.entries)


@dataclass
class PeerClient:
    """Requests to the workers' peer endpoints, signed with the fleet secret when set."""

    http: aiohttp.ClientSession
    signer: PeerSigner | None = None
    peer_offset: int = 0
    """``MESH_PEER_PORT_OFFSET``: the peer endpoints are on the web port plus this."""

    def request(self, method: str, url: str, path: str, body: Any = None) -> Any:
        """``method path`` at the worker ``url`` (an aiohttp request context)."""
        base = URL(url.rstrip("/"))
        if self.peer_offset and base.port is not None:
            url = str(base.with_port(base.port + self.peer_offset))
        data = b"" if body is None else orjson.dumps(body)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.signer is not None:
            headers.update(self.signer.headers(method, path, data))
        return self.http.request(method, url.rstrip("/") + path, data=data or None, headers=headers)


async def _report(peers: PeerClient, url: str) -> dict[str, Any]:
    try:
        async with peers.request("GET", url, RELATIONS_PATH) as resp:
            if resp.status != 200:
                raise FleetScanError(f"the worker at {url} answered {resp.status} to the scan")
            body: dict[str, Any] = await resp.json(content_type=None)
            return body
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise FleetScanError(
            f"the worker at {url} did not answer the scan ({type(exc).__name__}: {exc}); "
            "is a worker running there (--url)?"
        ) from None


def _gaps(reports: Sequence[dict[str, Any]], partitions: int) -> list[str]:
    """What keeps ``reports`` from being one whole scan (empty when they are)."""
    problems = [f"worker {r['worker']} is rebalancing or recovering" for r in reports
                if not r["stable"]]  # fmt: skip
    relations = {name for r in reports for name in r["relations"]}
    for name in sorted(relations):
        for side in ("child_partitions", "index_partitions"):
            seen = [p for r in reports for p in r["relations"].get(name, {}).get(side, [])]
            if sorted(seen) != list(range(partitions)):
                missing = sorted(set(range(partitions)) - set(seen))
                twice = sorted({p for p in seen if seen.count(p) > 1})
                problems.append(
                    f"{name} {side.split('_')[0]} partitions: missing {missing}, twice {twice}"
                )
    return problems


async def scan_fleet(peers: PeerClient, url: str) -> Scan:
    """One whole scan of the fleet reached through the worker at ``url``."""
    first = await _report(peers, url)
    others_urls = [p for p in first["peers"] if p.rstrip("/") != url.rstrip("/")]
    others = await asyncio.gather(*(_report(peers, p) for p in others_urls))
    reports = [first, *(r for r in others if r["worker"] != first["worker"])]
    partitions = int(first["partitions"])
    problems = _gaps(reports, partitions)
    if problems:
        raise FleetScanError("; ".join(problems))
    scan = Scan(sorted(r["worker"] for r in reports), partitions)
    for report in reports:
        for name, part in report["relations"].items():
            scan.children += [ChildRef(name, m, v, p, t) for m, v, p, t in part["children"]]
            scan.entries += [IndexEntry(name, p, m, v, ok) for p, m, v, ok in part["entries"]]
    return scan


async def steady_scan(
    peers: PeerClient, url: str, *, timeout: float, say: Callable[[str], None]
) -> Scan:
    """Scan until one scan is whole; :class:`FleetScanError` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await scan_fleet(peers, url)
        except FleetScanError as exc:
            if time.monotonic() >= deadline:
                raise FleetScanError(
                    f"could not scan the whole fleet within {timeout:.0f} s: {exc}"
                ) from None
            say(f"scan incomplete, trying again: {exc}")
            await asyncio.sleep(1.0)


async def send_repairs(
    peers: PeerClient, url: str, found: Sequence[Difference]
) -> list[Difference]:
    """Send the repair of each difference; returns those the version guard would refuse."""
    refused = [d for d in found if d.repair() is None]
    ops = [op for d in found if (op := d.repair()) is not None]
    for start in range(0, len(ops), REPAIR_BATCH):
        batch = ops[start : start + REPAIR_BATCH]
        body = {"ops": [{"parent": op.parent, **op.as_json()} for op in batch]}
        async with peers.request("POST", url, REPAIR_PATH, body) as resp:
            if resp.status != 200:
                raise MeshError(
                    f"the worker at {url} refused the repairs ({resp.status}): {await resp.text()}"
                )
    return refused


@dataclass
class CheckResult:
    """What ``mesh relations check`` found and did."""

    scan: Scan
    found: list[Difference]
    remaining: list[Difference]
    refused: list[Difference] = field(default_factory=list)


async def check_relations(
    url: str,
    *,
    repair: bool,
    settle: float,
    wait: float,
    scan_timeout: float,
    say: Callable[[str], None],
    signer: PeerSigner | None = None,
    peer_offset: int = 0,
) -> CheckResult:
    """Scan, confirm, and with ``repair`` repair and verify (see the module docs); the
    requests are signed by ``signer`` (the fleet secret's) when given."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        http = PeerClient(session, signer, peer_offset)
        first = await steady_scan(http, url, timeout=scan_timeout, say=say)
        found = first.differences()
        scan = first
        if found:
            say(f"{_count(len(found))} in the first scan; scanning again in {settle:g} s")
            await asyncio.sleep(settle)
            scan = await steady_scan(http, url, timeout=scan_timeout, say=say)
            found = confirmed(found, scan.differences())
        if not repair or not found:
            return CheckResult(scan, found, found)
        refused = await send_repairs(http, url, found)
        say(f"sent {len(found) - len(refused)} repairs; waiting for the owners to apply them")
        targets = {_where(d) for d in found} - {_where(d) for d in refused}
        deadline = time.monotonic() + wait
        while True:
            scan = await steady_scan(http, url, timeout=scan_timeout, say=say)
            remaining = [d for d in scan.differences() if _where(d) in targets]
            if not remaining or time.monotonic() >= deadline:
                return CheckResult(scan, found, remaining, refused)
            await asyncio.sleep(1.0)


def _where(difference: Difference) -> tuple[str, str, str]:
    return difference.relation, difference.parent, difference.member


def run_relations_check(
    url: str,
    *,
    repair: bool,
    settle: float,
    wait: float,
    scan_timeout: float,
    signer: PeerSigner | None = None,
    peer_offset: int = 0,
) -> int:
    """Run the check, print what it found, and return the exit status."""

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        result = asyncio.run(
            check_relations(
                url,
                repair=repair,
                settle=settle,
                wait=wait,
                scan_timeout=scan_timeout,
                say=say,
                signer=signer,
                peer_offset=peer_offset,
            )
        )
    except FleetScanError as exc:
        print(f"mesh: relation check incomplete: {exc}", file=sys.stderr, flush=True)
        return 3
    scan = result.scan
    say(
        f"checked {len(scan.entries)} relation index entries against {len(scan.children)} "
        f"child records on {len(scan.workers)} workers ({', '.join(scan.workers)}), "
        f"{scan.partitions} partitions"
    )
    if not result.found:
        say("no differences: every relation index matches the entity records")
        return 0
    say(f"{_count(len(result.found))} (found in two scans {settle:g} s apart):")
    for difference in result.found:
        say(f"  {difference.describe()}")
    if not repair:
        say("run again with --repair to correct them")
        return 1
    for difference in result.refused:
        say(f"  not repaired, the index entry is newer than the record: {difference.describe()}")
    if result.remaining:
        say(f"{_count(len(result.remaining))} remain after the repair:")
        for difference in result.remaining:
            say(f"  {difference.describe()}")
    if result.remaining or result.refused:
        return 1
    say(f"repaired {_count(len(result.found))}; the indexes now match the records")
    return 0


def _count(n: int) -> str:
    return f"{n} difference" if n == 1 else f"{n} differences"
