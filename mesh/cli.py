"""The ``mesh`` command line: one entry point for the worker, registry, dev stack and checks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from mesh import __version__
from mesh.errors import ConfigError, MeshError
from mesh.settings import Settings, load_settings


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from mesh.app import run_worker

    return run_worker(settings)


def _cmd_registry(settings: Settings, args: argparse.Namespace) -> int:
    from mesh.registry import serve_registry

    data = args.data or settings.state_dir / "registry" / "registry.db"
    data.parent.mkdir(parents=True, exist_ok=True)
    print(f"schema registry on http://{args.host}:{args.port} (storage {data})", flush=True)
    asyncio.run(serve_registry(args.host, args.port, data))
    return 0


def _cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from mesh.dev.stack import run_dev_stack

    return run_dev_stack(settings)


def _cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    if args.bench == "ingest":
        from mesh.bench.ingest import run_ingest

        return run_ingest(settings, args.events)
    if args.bench == "graphql":
        from mesh.bench.graphql import run_graphql

        return run_graphql(settings, args.duration, args.concurrency, args.customers, args.warmup)
    if args.bench == "mirror":
        from mesh.domain import load_domain
        from mesh.mirror.bench import bench_mirror

        result = asyncio.run(
            bench_mirror(settings, load_domain(settings.domain_config), events=args.events)
        )
        print("\n".join(result.lines()))
        return 0
    from mesh.bench.freshness import run_freshness

    return run_freshness(settings, args.items, args.bulk)


def _cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from mesh.domain import load_domain
    from mesh.schemas import load_event_schemas

    domain = load_domain(settings.domain_config)
    load_event_schemas(domain, settings.schemas_dir)
    print(f"{settings.domain_config}: ok ({len(domain.entities)} entity types)")
    for entity_type in domain.entities:
        print(f"  {entity_type:<14} topic {domain.topic(entity_type)}")
    for reference in domain.unindexed_references():
        entity, field = reference.split(".")
        target = domain.entities[entity].fields[field].references
        print(
            f"warning: {reference} references {target} but {target} has no reverse relation "
            f"on it; add `reverse_relations: {{<name>: {{entity: {entity}, field: {field}}}}}` "
            f"to {target} so deleting a {target} in the source updates the {entity}s that "
            "pointed at it"
        )
    return 0


def _cmd_schemas(settings: Settings, args: argparse.Namespace) -> int:
    from mesh.domain import load_domain
    from mesh.schemas import load_event_schemas, write_after_schemas

    domain = load_domain(settings.domain_config)
    if args.write:
        changed = write_after_schemas(domain, settings.schemas_dir)
        for path in changed:
            print(f"wrote {path}")
        if not changed:
            print("schemas already match the domain config")
        return 0
    load_event_schemas(domain, settings.schemas_dir)
    print("schemas match the domain config")
    return 0


def _cmd_relations(settings: Settings, args: argparse.Namespace) -> int:
    from mesh.relations_check import run_relations_check

    url = args.url or f"http://{settings.web_host}:{settings.web_port}"
    return run_relations_check(
        url, repair=args.repair, settle=args.settle, wait=args.wait, scan_timeout=args.scan_timeout
    )


def _cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    for name, value in settings.model_dump().items():
        print(f"{name} = {value}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mesh", description="DictaMesh: change capture, entity catalog, federated GraphQL."
    )
    parser.add_argument("--version", action="version", version=f"mesh {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("worker", help="run one worker of the fleet").set_defaults(run=_cmd_worker)
    registry = sub.add_parser("registry", help="run the Confluent-compatible schema registry")
    registry.add_argument("--host", default="127.0.0.1")
    registry.add_argument("--port", type=int, default=8081)
    registry.add_argument("--data", type=Path, default=None, help="SQLite file for schemas")
    registry.set_defaults(run=_cmd_registry)
    sub.add_parser("dev", help="run the whole local stack in the foreground").set_defaults(
        run=_cmd_dev
    )
    bench = sub.add_parser("bench", help="benchmarks against the local stack")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    freshness = benches.add_parser("freshness", help="Directus write → Kafka event delay")
    freshness.add_argument("--items", type=int, default=200, help="single writes (p50/p99)")
    freshness.add_argument("--bulk", type=int, default=10_000, help="items in the bulk load")
    freshness.set_defaults(run=_cmd_bench)
    ingest = benches.add_parser("ingest", help="catalog events/s vs the raw Kafka ceiling")
    ingest.add_argument("--events", type=int, default=200_000, help="change events to load")
    ingest.set_defaults(run=_cmd_bench)
    graphql = benches.add_parser(
        "graphql", help="POST /graphql requests/s, p50/p99, 1 and 2 workers"
    )
    graphql.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    graphql.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    graphql.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    graphql.add_argument("--customers", type=int, default=1000, help="customers to query by id")
    graphql.set_defaults(run=_cmd_bench)
    mirror = benches.add_parser("mirror", help="Postgres mirror rows/s vs consume-only")
    mirror.add_argument("--events", type=int, default=50_000, help="change events to mirror")
    mirror.set_defaults(run=_cmd_bench)
    sub.add_parser("check", help="validate settings, domain config and schemas").set_defaults(
        run=_cmd_check
    )
    schemas = sub.add_parser("schemas", help="check (or --write) the Avro after records")
    schemas.add_argument("--write", action="store_true", help="regenerate from the domain config")
    schemas.set_defaults(run=_cmd_schemas)
    relations = sub.add_parser("relations", help="operate on the relation indexes")
    relation_commands = relations.add_subparsers(dest="relations", required=True, metavar="ACTION")
    check = relation_commands.add_parser(
        "check", help="compare every relation index with the entity records of the fleet"
    )
    check.add_argument(
        "--url", default=None, help="a worker's web URL (default: MESH_WEB_HOST:MESH_WEB_PORT)"
    )
    check.add_argument("--repair", action="store_true", help="send the corrections to the owners")
    check.add_argument(
        "--settle", type=float, default=3.0, help="seconds between the two scans that confirm"
    )
    check.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for repairs to show"
    )
    check.add_argument(
        "--scan-timeout", type=float, default=120.0, help="seconds to wait for a steady fleet"
    )
    check.set_defaults(run=_cmd_relations)
    sub.add_parser("config", help="print the effective settings, secrets masked").set_defaults(
        run=_cmd_config
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mesh`` console script."""
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        # One line per HTTP request drowns what the commands say.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        return int(args.run(settings, args))
    except ConfigError as exc:
        print(f"mesh: configuration error: {exc}", file=sys.stderr)
        return 2
    except MeshError as exc:
        print(f"mesh: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
