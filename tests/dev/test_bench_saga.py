"""``mesh bench saga`` with tiny numbers: it runs end to end on a Directus of its own, every
saga completes, both paths make the same Directus writes, and it cleans up after itself.
Then :func:`timeline`, which splits a saga's time into its parts, on a made-up history."""

from __future__ import annotations

import psycopg2
import pytest
from mesh_tooling.bench.saga import (
    BETWEEN,
    CEILING,
    PLACED,
    SAGAS,
    SEEN,
    SagaBench,
    failed,
    ratios,
    report,
    timeline,
)
from mesh_tooling.settings import DevSettings
from pydantic import SecretStr

STEPS = ("check_order", "reserve_stock", "create_invoice", "issue_invoice")


def _databases(server: str) -> set[str]:
    conn = psycopg2.connect(server)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database")
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


@pytest.mark.directus
async def test_the_bench_completes_every_saga_and_reports_the_ratio(postgres_url: str) -> None:
    # The session's Postgres server (the bench makes and drops a database of its own there).
    settings = DevSettings(database_url=SecretStr(postgres_url))
    bench = SagaBench(
        settings,
        sagas=6,
        concurrency=3,
        lines=2,
        workers=2,
        products=6,
        customers=2,
        warmup=3,
        rounds=1,
    )
    run = await bench.measure()

    assert [(p.path, p.round) for p in run.phases] == [(CEILING, 1), (SAGAS, 1)]
    for phase in run.phases:
        assert phase.errors == 0, phase.first_error
        assert phase.finished == phase.orders == 6
        assert phase.outcomes == {"COMPLETED": 6}
        assert phase.per_s > 0
        assert 0 < phase.p50_ms <= phase.p99_ms
        # Each line: a reservation made and marked held, the product's stock lowered, an
        # invoice item; each order: its invoice created and issued.
        assert phase.writes == {
            "reservations create": 12, "reservations update": 12, "products update": 12,
            "invoice_items create": 12, "invoices create": 6, "invoices update": 6,
        }  # fmt: skip
        assert phase.cpu_s["workers"] > 0
        assert phase.cpu_s["Directus"] > 0  # its process was found by its port
        assert phase.cpu_s["client"] > 0
    ceiling, sagas = run.phases
    # The ceiling counts its requests: its writes are the ones Directus logged.
    logged = {}
    for request, n in ceiling.requests.items():
        method, collection = request.split()
        if method != "GET":
            logged[f"{collection} {'create' if method == 'POST' else 'update'}"] = n
    assert logged == ceiling.writes
    # Per line: the stock read, the reservation created (looked up only when Directus
    # refuses it as a retry's second row: never here), the stock lowered, the row marked
    # held; per order: the invoice and its items created (the same), the invoice issued.
    assert {k: n for k, n in ceiling.requests.items() if k != "GET reservations"} == {
        "GET products": 12, "POST reservations": 12, "PATCH products": 12,
        "PATCH reservations": 12, "POST invoice_items": 12, "POST invoices": 6,
        "PATCH invoices": 6,
    }  # fmt: skip
    assert ceiling.requests["GET reservations"] <= 6  # a first-touch check per product
    assert not sagas.requests  # the workers' requests are not counted here
    assert sagas.statuses == {"COMPLETED": 6}  # as GraphQL saga(id) answers
    assert list(ceiling.parts_ms) == list(STEPS[1:])  # no catalog check without the engine
    assert set(sagas.parts_ms) == {PLACED, *STEPS, BETWEEN, SEEN}
    assert all(len(values) == 6 for values in sagas.parts_ms.values())
    assert len(sagas.transitions_ms) == 6 * 5  # STARTED→, 3 between steps, →COMPLETED
    assert not failed(run)

    lines = report(run)
    assert lines[0].startswith("round 1 ceiling:")
    for shown in ("6/6", "COMPLETED 6; errors 0", "load client CPU"):
        assert shown in lines[0]
    assert any(line.startswith("round 1 sagas  :") for line in lines)
    assert any("statuses read back through GraphQL saga(id): COMPLETED 6" in x for x in lines)
    assert any(line.strip().startswith("CPU ms per order: client") for line in lines)
    assert any(line.strip().startswith("Directus requests per order: ") for line in lines)
    assert any(line.strip().startswith("time per order (mean ms): placeOrder") for line in lines)
    [ratio] = ratios(run.phases)
    assert ratio == pytest.approx(sagas.per_s / ceiling.per_s)
    assert lines[-1].startswith(f"sagas / ceiling: {ratio:.2f} over 1 round(s) — target ≥ 0.8:")
    assert not any(line.startswith("WARNING") for line in lines)  # the same writes per order

    assert not bench.root.exists()  # the scratch directory is gone
    assert bench.database is not None
    assert bench.database not in _databases(postgres_url)  # and its Directus database


def test_a_saga_s_time_splits_into_its_parts() -> None:
    at = 1000.0
    history = [
        {"at": at + 0.010, "event": "STARTED", "step": None},
        {"at": at + 0.015, "event": "STEP_STARTED", "step": "check"},
        {"at": at + 0.035, "event": "STEP_SUCCEEDED", "step": "check"},
        {"at": at + 0.040, "event": "STEP_STARTED", "step": "write"},
        {"at": at + 0.050, "event": "STEP_FAILED", "step": "write"},  # retried
        {"at": at + 0.060, "event": "STEP_STARTED", "step": "write"},
        {"at": at + 0.160, "event": "STEP_SUCCEEDED", "step": "write"},
        {"at": at + 0.170, "event": "COMPLETED", "step": None},
    ]
    parts, gaps = timeline(history, sent=at, seen=at + 0.172)
    assert parts == pytest.approx(
        {PLACED: 10, "check": 20, "write": 120, BETWEEN: 20, SEEN: 2}  # ms
    )
    assert gaps == pytest.approx([5, 5, 10])
    assert sum(parts.values()) == pytest.approx(172)  # the whole of it
