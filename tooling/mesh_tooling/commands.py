"""The tooling's ``mesh`` sub-commands (``dictamesh.commands`` entry points): each ``add_*``
adds its parser; the command reads :class:`~mesh_tooling.settings.DevSettings`."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from mesh.settings import Settings, load_settings
from mesh_tooling.settings import DevSettings


def _dev_settings() -> DevSettings:
    return load_settings(DevSettings)


def _cmd_registry(settings: Settings, args: argparse.Namespace) -> int:
    from mesh_tooling.registry import serve_registry

    data = args.data or settings.state_dir / "registry" / "registry.db"
    data.parent.mkdir(parents=True, exist_ok=True)
    print(f"schema registry on http://{args.host}:{args.port} (storage {data})", flush=True)
    asyncio.run(serve_registry(args.host, args.port, data))
    return 0


def _cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from mesh_tooling.dev.stack import run_dev_stack

    dev = _dev_settings()
    if args.tenants is not None:
        dev = dev.model_copy(update={"dev_tenants": args.tenants})
    return run_dev_stack(dev)


def _cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    from mesh_tooling.seed import run_seed

    return run_seed(_dev_settings(), rows=not args.no_rows, wait=args.wait)


def _cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    if args.bench == "ingest":
        from mesh_tooling.bench.ingest import run_ingest

        return run_ingest(
            settings, args.events, tracing=args.tracing, rounds=args.rounds,
            recovery=not args.no_recovery,
        )  # fmt: skip
    if args.bench == "graphql":
        from mesh_tooling.bench.graphql import run_graphql

        return run_graphql(
            settings, args.duration, args.concurrency, args.customers, args.warmup,
            tracing=args.tracing, rounds=args.rounds, redis=args.redis,
            dev_config=args.dev_config, load_process=args.load_process, only=args.only,
            workers=args.workers, auth_rounds=args.auth_rounds,
        )  # fmt: skip
    if args.bench == "recovery":
        from mesh_tooling.bench.recovery import run_recovery

        return run_recovery(settings, args.entities, args.replay)
    if args.bench == "saga":
        from mesh_tooling.bench.saga import run_saga

        return run_saga(
            _dev_settings(), sagas=args.sagas, concurrency=args.concurrency, lines=args.lines,
            workers=args.workers, products=args.products, rounds=args.rounds,
        )  # fmt: skip
    if args.bench == "mirror":
        from mesh.domain import load_domain
        from mesh_tooling.bench.mirror import bench_mirror

        result = asyncio.run(
            bench_mirror(settings, load_domain(settings.domain_config), events=args.events)
        )
        print("\n".join(result.lines()))
        return 0
    from mesh_tooling.bench.freshness import run_freshness

    return run_freshness(_dev_settings(), args.items, args.bulk, through=args.through)


def _cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from mesh.domain import load_domain
    from mesh_tooling.dev.issuer import DevIssuer

    dev = _dev_settings()
    tenant = args.tenant or load_domain(dev.domain_config).tenants[0]
    issuer = DevIssuer.in_dir(dev.state_dir / "issuer")
    scopes = tuple(s for value in args.scope for s in value.split())
    print(issuer.mint(tenant, scopes=scopes, subject=args.subject, ttl_s=args.ttl))
    return 0


def add_token(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``mesh token``: a bearer token from the dev stack's issuer."""
    token = sub.add_parser(
        "token",
        help="mint a bearer token the dev stack's workers accept",
        description=(
            "Print a JWT signed by the dev stack's own issuer (its key pair is in "
            "<MESH_STATE_DIR>/issuer, made on first use), for the domain's tenant unless "
            "--tenant says otherwise. Send it as 'Authorization: Bearer <token>'."
        ),
    )
    token.add_argument("--tenant", default=None, help="the token's tenant claim")
    token.add_argument("--scope", action="append", default=[], help="a scope to grant (repeatable)")
    token.add_argument("--subject", default="dev", help="the token's sub claim (default: dev)")
    token.add_argument(
        "--ttl", type=float, default=3600.0, metavar="SECONDS", help="validity (default: 3600)"
    )
    token.set_defaults(run=_cmd_token)


def add_registry(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``mesh registry``: the Confluent-compatible schema registry of the dev stack."""
    registry = sub.add_parser("registry", help="run the Confluent-compatible schema registry")
    registry.add_argument("--host", default="127.0.0.1")
    registry.add_argument("--port", type=int, default=8081)
    registry.add_argument("--data", type=Path, default=None, help="SQLite file for schemas")
    registry.set_defaults(run=_cmd_registry)


def add_dev(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``mesh dev``: the whole local stack in the foreground."""
    dev = sub.add_parser("dev", help="run the whole local stack in the foreground")
    dev.add_argument(
        "--tenants",
        type=int,
        choices=(1, 2),
        default=None,
        help="2: also run the second tenant's own Directus (default: MESH_DEV_TENANTS or 1)",
    )
    dev.set_defaults(run=_cmd_dev)


def add_seed(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``mesh seed``: seed an already running Directus (the compose file's one-shot job)."""
    seed = sub.add_parser(
        "seed",
        help="seed a running Directus with the domain's collections, service user and rows",
        description=(
            "Seed each Directus source of the domain config (its url, e.g. MESH_DIRECTUS_URL) "
            "with the collections, a read-only service user whose static token is the one "
            "the adapters use (the variable named by token_env, e.g. MESH_DIRECTUS_TOKEN) "
            "and sample rows, logging in as MESH_DIRECTUS_ADMIN_EMAIL / "
            "MESH_DIRECTUS_ADMIN_PASSWORD. Idempotent: a second run creates nothing."
        ),
    )
    seed.add_argument(
        "--no-rows", action="store_true", help="collections and service user only, no rows"
    )
    seed.add_argument(
        "--wait",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long to wait for Directus' /server/health to answer (default: 120)",
    )
    seed.set_defaults(run=_cmd_seed)


def _add_tracing(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--tracing",
        action="store_true",
        help=f"{what} (alternated, fresh workers; spans exported to a local OTLP sink)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="with --tracing: rounds of the three (default: 3)"
    )


def _counts(text: str) -> tuple[int, ...]:
    """``1,2`` → ``(1, 2)``: positive integers."""
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of worker counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be positive: {text!r}")
    return counts


def _names(text: str) -> list[str]:
    """``by-id-cached,nested-uncached`` → the names (checked by the bench)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``mesh bench …``: the benchmarks against the local stack."""
    bench = sub.add_parser("bench", help="benchmarks against the local stack")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    freshness = benches.add_parser("freshness", help="Directus write → Kafka event delay")
    freshness.add_argument("--items", type=int, default=200, help="single writes (p50/p99)")
    freshness.add_argument("--bulk", type=int, default=10_000, help="items in the bulk load")
    freshness.add_argument(
        "--through",
        choices=("kafka", "graphql"),
        default="kafka",
        help="kafka: write → event on Kafka, then the bulk load (default); graphql: write → "
        "visible in the worker's GraphQL answer, p50/p99 against the SLO (p99 < 2 s)",
    )
    freshness.set_defaults(run=_cmd_bench)
    ingest = benches.add_parser("ingest", help="catalog events/s vs the raw Kafka ceiling")
    ingest.add_argument("--events", type=int, default=200_000, help="change events to load")
    ingest.add_argument(
        "--no-recovery",
        action="store_true",
        help="skip the last phase: a new worker recovering the tables from the changelogs",
    )
    _add_tracing(ingest, "instead: the catalog's events/s with tracing off, default, 100 %%")
    ingest.set_defaults(run=_cmd_bench)
    graphql = benches.add_parser(
        "graphql",
        help="POST /graphql requests/s, p50/p99, 1 and 2 workers, without and with Redis",
        description=(
            "Starts a broker, registry, an OTLP sink and fleets of workers in the production "
            "configuration (authentication on with the dev issuer's token, audit lines, the "
            "rate limiter, peer endpoints on their own port, tracing at the default sampler); "
            "for each worker count and each Redis choice, a fleet of its own measures a "
            "baseline (POST /api/v1/internal/entities without keys, signed with the fleet "
            "secret as a peer call) and GraphQL by id and nested, cached and uncached, each "
            "as a ratio to its fleet's baseline against the issue's targets, with the CPU "
            "share of the workers, the load generator and the rest in each measured window; "
            "then the cached read by id with authentication off and on, alternated. Exit "
            "code 1 if any request failed."
        ),
    )
    graphql.add_argument(
        "--duration", type=float, default=10.0, help="seconds per scenario (default: 10)"
    )
    graphql.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of load before measuring (default: 2); a cached scenario first asks "
        "each of its requests once on each worker",
    )
    graphql.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="requests in flight (default: 32; the nested uncached p99 target is at 8)",
    )
    graphql.add_argument(
        "--customers", type=int, default=1000, help="customers to query by id (default: 1000)"
    )
    graphql.add_argument(
        "--redis",
        metavar="off|on|both|URL",
        default=None,
        help="fleets without Redis (off), with it (on: MESH_REDIS_URL), or both, each against "
        "its own baseline; a redis:// URL: both, with that Redis (default: both when "
        "MESH_REDIS_URL is set, else off)",
    )
    graphql.add_argument(
        "--workers",
        type=_counts,
        default=(1, 2),
        metavar="N[,N]",
        help="fleet sizes to measure (default: 1,2)",
    )
    graphql.add_argument(
        "--only",
        type=_names,
        default=None,
        metavar="NAME[,NAME]",
        help="measure only these of by-id-cached, by-id-uncached, nested-cached, "
        "nested-uncached and auth-ab (the baseline always; default: all), e.g. "
        "--only nested-uncached --concurrency 8 --workers 2",
    )
    graphql.add_argument(
        "--load-process",
        choices=("bench", "separate"),
        default="bench",
        help="where the closed-loop load runs: in the bench's process (default) or in a "
        "separate OS process running the same loop",
    )
    graphql.add_argument(
        "--dev-config",
        action="store_true",
        help="workers as the benches used to run them: authentication off, logs at warning, "
        "tracing as the environment says (the baseline unsigned)",
    )
    graphql.add_argument(
        "--auth-rounds",
        type=int,
        default=2,
        help="rounds of the authentication off/on A/B (default: 2; 0: none)",
    )
    _add_tracing(graphql, "instead: one worker's requests/s with tracing off, default, 100 %%")
    graphql.set_defaults(run=_cmd_bench)
    recovery = benches.add_parser(
        "recovery", help="restart with and without the volume vs the raw changelog ceiling"
    )
    recovery.add_argument("--entities", type=int, default=100_000, help="invoices to load")
    recovery.add_argument(
        "--replay", action="store_true", help="also rebuild by Faust's record-by-record replay"
    )
    recovery.set_defaults(run=_cmd_bench)
    saga = benches.add_parser(
        "saga",
        help="place-order sagas/s, p50/p99 vs their Directus requests sent directly",
        description=(
            "Starts a broker, registry, a Directus of its own (on a fresh database of the "
            "Postgres at MESH_DATABASE_URL, else 127.0.0.1:5432, else a throwaway one) and "
            "workers; then, alternated over rounds at the same concurrency, places orders "
            "through GraphQL placeOrder, each waited for until its saga ends, and sends the "
            "same orders' Directus requests directly (the saga's own steps without the "
            "engine): sagas/s, p50/p99 completion time, their ratio (target >= 0.8), where "
            "an order's time goes and CPU per order by process. Exit code 1 if any order "
            "failed or any saga did not complete."
        ),
    )
    saga.add_argument(
        "--sagas", type=int, default=120, help="orders per path and round (default: 120)"
    )
    saga.add_argument("--concurrency", type=int, default=8, help="orders in flight (default: 8)")
    saga.add_argument(
        "--lines", type=int, default=2, help="lines (distinct products) per order (default: 2)"
    )
    saga.add_argument("--workers", type=int, default=2, help="workers in the fleet (default: 2)")
    saga.add_argument(
        "--products", type=int, default=50, help="products the lines are drawn from (default: 50)"
    )
    saga.add_argument(
        "--rounds", type=int, default=2, help="rounds of the two paths, alternated (default: 2)"
    )
    saga.set_defaults(run=_cmd_bench)
    mirror = benches.add_parser("mirror", help="Postgres mirror rows/s vs consume-only")
    mirror.add_argument("--events", type=int, default=50_000, help="change events to mirror")
    mirror.set_defaults(run=_cmd_bench)
