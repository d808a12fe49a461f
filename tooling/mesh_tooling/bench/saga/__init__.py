"""``mesh bench saga``: place-order sagas/s and p50/p99 completion time, against the ceiling
of the same Directus requests sent without the engine, measured in the same run.

Self-contained like ``mesh bench graphql`` (whose broker, registry and worker helpers it
reuses from :class:`~mesh_tooling.bench.ingest.IngestBench`): it starts a broker, the schema
registry, a Directus 10.10 of its own on a fresh database (of the Postgres server at
``MESH_DATABASE_URL``, else 127.0.0.1:5432, else a throwaway cluster) seeded with the sample
domain's collections, the adapters' read-only user and the sagas' writing one, and
``--workers`` workers following it, which accept a dev issuer's tokens (the bench's carries
``orders:write``). It makes its own customers and products (stock enough that no order is
refused) and waits until the catalog holds them. After a warm-up of both paths it measures,
over ``--rounds`` (the two alternated, round 1 starting with the ceiling):

* sagas: ``--sagas`` orders of ``--lines`` distinct products each (1 to 3 units) placed by
  ``--concurrency`` clients through GraphQL ``placeOrder``, each client waiting for its
  saga's final transition on ``sagas.dictamesh.saga_changed`` before placing its next;
  completion time is from ``placeOrder`` sent to that event received; afterwards every
  saga's status is read back through GraphQL ``saga(id)``;
* ceiling: the same orders at the same concurrency, each running the place-order saga's
  own Directus steps (``reserve_stock`` through a :class:`~mesh.sagas.stock.StockKeeper`
  with its one-writer-per-product locks, ``create_invoice``, ``issue_invoice``) in this
  process with the sagas' token: the same requests in the same order, without the engine
  (no changelog, no transition events, no peer hops, no catalog check).

The report gives per phase the rate, p50/p99, the Directus writes per order (from
Directus' activity log: the two paths must make the same), where an order's time went (the
ceiling's steps; a saga's steps, transitions and hops from its history, see
:func:`timeline`) and the CPU each process spent per order: this load client, the workers,
Directus, the bench database's Postgres backends, the broker, and what else ran on the
machine meanwhile (a shared machine's other load shows there); then the ratio of the two
rates per round (target ≥ :data:`TARGET`).

The package, one job per module: :mod:`.model` (orders, a phase, a run), :mod:`.fleet`
(services, workers and data), :mod:`.phases` (warm-up and the passes of both paths),
:mod:`.ceiling` (the saga's steps without the engine), :mod:`.counting` (the Directus
requests and logged writes), :mod:`.cpu` (CPU per process) and :mod:`.report` (the figures
and the command).
"""

from __future__ import annotations

from mesh_tooling.bench.saga.ceiling import CATALOG_STEP, DirectSagas
from mesh_tooling.bench.saga.counting import CountingDirectus
from mesh_tooling.bench.saga.cpu import CpuMeter, listener_pid, postgres_backends
from mesh_tooling.bench.saga.fleet import DirectusTarget, SagaFleet
from mesh_tooling.bench.saga.model import (
    BETWEEN,
    CEILING,
    MAX_UNITS,
    PLACED,
    SAGA_TYPE,
    SAGAS,
    SEEN,
    Order,
    Phase,
    SagaRun,
    make_orders,
)
from mesh_tooling.bench.saga.phases import SagaBench, timeline
from mesh_tooling.bench.saga.report import TARGET, failed, ratios, report, run_saga

__all__ = [
    "BETWEEN",
    "CATALOG_STEP",
    "CEILING",
    "MAX_UNITS",
    "PLACED",
    "SAGAS",
    "SAGA_TYPE",
    "SEEN",
    "TARGET",
    "CountingDirectus",
    "CpuMeter",
    "DirectSagas",
    "DirectusTarget",
    "Order",
    "Phase",
    "SagaBench",
    "SagaFleet",
    "SagaRun",
    "failed",
    "listener_pid",
    "make_orders",
    "postgres_backends",
    "ratios",
    "report",
    "run_saga",
    "timeline",
]
