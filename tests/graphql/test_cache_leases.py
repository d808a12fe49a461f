"""Responses that read other workers' keys, cached without Redis, when a worker stalls.

Two real workers without Redis, leases of one second. Worker A caches an answer built
from worker B's customers; then A is frozen (SIGSTOP: a long GC pause, a partitioned
node) and the customers are renamed. B cannot push the change to A: it revokes A's lease,
waits for it to end and writes, so a stalled reader delays B's writes by about one lease
and does not block them. Once A runs again, its lease has lapsed and its stored answer is
never served (the lease starts afresh): the first query answers the new names.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from mesh.domain import DomainConfig
from mesh.sources.events import Op
from tests.graphql.test_cache import ask, hits
from tests.support.fleet import at_version, customer, entity, eventually, open_fleet
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker

LEASE_S = 1.0


async def test_a_stalled_reader_delays_changes_by_a_lease_and_never_answers_them_stale(
    sample_domain: DomainConfig, tmp_path: Path
) -> None:
    env = {"MESH_CACHE_LEASE_S": str(LEASE_S)}
    names = ["lease-a", "lease-b"]
    async with open_fleet(sample_domain, tmp_path, "cache-leases", 4, names, env) as fleet:
        a, b = fleet.workers
        ids = range(1, 13)
        for cid in ids:
            await fleet.send("customer", cid, 1, customer(f"Old {cid}"), Op.CREATE)
        owners = {}
        for cid in ids:
            answer = await eventually(a, entity("customer", cid), at_version(1))
            owners[cid] = answer.worker
        remote = [cid for cid in ids if owners[cid] == b.name]
        assert remote, f"worker B owns none of the customers: {owners}"
        query = "{ " + " ".join(f'c{c}: customer(id: "{c}") {{ name }}' for c in remote) + " }"
        old = {f"c{c}": {"name": f"Old {c}"} for c in remote}

        # A holds B's lease once it renewed it: then its answer is stored and served.
        before = await hits(fleet, "response")

        async def served_from_cache() -> bool:
            assert await ask(a, query) == old
            return await hits(fleet, "response") > before

        await wait_until(served_from_cache, timeout=30, what="a cached answer on worker A")
        starts = await a.metric("dictamesh_cache_lease_starts_total")

        pid = a.proc.pid if a.proc is not None else None
        assert pid is not None
        os.killpg(pid, signal.SIGSTOP)
        try:
            for cid in remote:
                await fleet.send("customer", cid, 2, customer(f"New {cid}"), Op.UPDATE)
            started = time.monotonic()
            for cid in remote:
                await eventually(b, entity("customer", cid), at_version(2))
            took = time.monotonic() - started
            failed = await b.metric("dictamesh_cache_peer_pushes_total", result="failed")
        finally:
            os.killpg(pid, signal.SIGCONT)
        assert failed >= 1, "B wrote without trying to reach A first"
        # One lease to wait out (plus the push's own timeout) and the catalog's batching.
        assert took < 4 * LEASE_S + 5, f"B's writes waited {took:.1f} s for the stalled A"
        new = {f"c{c}": {"name": f"New {c}"} for c in remote}
        assert await ask(a, query) == new
        # A's lease on B lapsed while it stood still: it took a new one, under which its
        # answers stored before are never served. (The push B gave up on still reached A
        # from its socket once A ran again, so the answer above cannot tell the two apart.)
        await wait_until(
            lambda: _more(a, starts), timeout=10, what="worker A taking a new lease on B"
        )


async def _more(worker: MeshWorker, than: float) -> bool:
    return await worker.metric("dictamesh_cache_lease_starts_total") > than
