"""The ``mesh`` command line: the worker, the checks and the operator commands.

The tooling (``mesh dev``, ``mesh registry``, ``mesh bench``, ``mesh seed``) is another
distribution, ``dictamesh-tooling``; its commands join this one through the ``dictamesh.commands``
entry points when it is installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

from mesh import __version__
from mesh.deadletters.command import add_deadletter_commands
from mesh.errors import ConfigError, MeshError
from mesh.logs import configure_logging, console_unless_set
from mesh.settings import Settings, load_settings

PACKAGE_DIR = Path(__file__).resolve().parent
"""The installed package: in a checkout its samples link out of it, in a wheel they are in it."""
COMMANDS_GROUP = "dictamesh.commands"
TOOLING_COMMANDS = ("dev", "registry", "bench", "seed", "token")
"""Commands of the tooling distribution, named in the error when it is not installed."""
CONSOLE_COMMANDS = ("dev",)
"""Commands that log readable console lines unless ``MESH_LOG_FORMAT`` is set."""

AddCommand = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
"""What a ``dictamesh.commands`` entry point loads: it adds its sub-command(s), each with
``set_defaults(run=fn)``, ``fn(settings, args) -> exit code``."""


def tooling_commands() -> dict[str, AddCommand]:
    """The sub-commands other installed distributions add, by name."""
    found = sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name)
    return {e.name: e.load() for e in found}


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from mesh.app import run_worker

    return run_worker(settings)


def _cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from mesh.domain import load_domain
    from mesh.schemas import load_event_schemas

    domain = load_domain(settings.domain_config)
    load_event_schemas(domain, settings.schemas_dir)
    print(f"{settings.domain_config}: ok ({len(domain.entities)} entity types)")
    for entity_type in domain.entities:
        print(f"  {entity_type:<14} topic {', '.join(domain.topics(entity_type))}")
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
        if settings.schemas_dir.resolve().is_relative_to(PACKAGE_DIR):
            raise ConfigError(
                f"{settings.schemas_dir} is the sample shipped inside the installed package; "
                "copy it out with `mesh init DIR` and set MESH_SCHEMAS_DIR (and "
                "MESH_DOMAIN_CONFIG) to your copy",
                source="environment",
                key="MESH_SCHEMAS_DIR",
            )
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
    from mesh.auth.verifier import peer_signer
    from mesh.relations_check import run_relations_check

    url = args.url or f"http://{settings.web_host}:{settings.web_port}"
    return run_relations_check(
        url,
        repair=args.repair,
        settle=args.settle,
        wait=args.wait,
        scan_timeout=args.scan_timeout,
        signer=peer_signer(settings),  # MESH_FLEET_SECRET, as the workers have it
        peer_offset=settings.peer_port_offset,
    )


def _cmd_mirror_grant(settings: Settings, args: argparse.Namespace) -> int:
    from mesh.mirror.grants import run_grant

    return run_grant(
        settings,
        tenant=args.tenant,
        role=args.role,
        login=args.login,
        password_env=args.password_env,
    )


def _cmd_init(settings: Settings, args: argparse.Namespace) -> int:
    from mesh.samples import write_samples

    written = write_samples(args.dir)
    for path in written:
        print(f"wrote {path}")
    target = args.dir.absolute()
    print(
        "edit the domain config, then point DictaMesh at it:\n"
        f"  export MESH_DOMAIN_CONFIG={target / 'config' / 'domain.yaml'}\n"
        f"  export MESH_SCHEMAS_DIR={target / 'schemas'}\n"
        "  mesh schemas --write   # the Avro records of your entities\n"
        "  mesh check"
    )
    return 0


def _cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    import yaml

    from mesh.domain import load_domain
    from mesh.topics import fleet_topics, strimzi_resources

    domain = load_domain(settings.domain_config)
    topics = fleet_topics(settings, domain, entity_retention_days=args.entity_retention_days)
    resources = strimzi_resources(
        topics,
        cluster=args.cluster,
        app_id=settings.app_id,
        replicas=args.replicas,
        user_auth=args.user_auth,
    )
    header = (
        "# Generated by `mesh topics` from the domain config and settings: regenerate, do\n"
        f"# not edit. MESH_APP_ID={settings.app_id}, "
        f"MESH_TOPIC_PARTITIONS={settings.topic_partitions} (never change it once data\n"
        "# exists: keys are routed to partitions by it).\n"
    )
    text = header + yaml.safe_dump_all(resources, sort_keys=False)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {len(resources) - 1} KafkaTopics and a KafkaUser to {args.output}")
    return 0


def _cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    for name, value in settings.model_dump().items():
        print(f"{name} = {value}")
    return 0


def _parser(added: dict[str, AddCommand]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mesh", description="DictaMesh: change capture, entity catalog, federated GraphQL."
    )
    parser.add_argument("--version", action="version", version=f"mesh {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("worker", help="run one worker of the fleet").set_defaults(run=_cmd_worker)
    for command in added.values():
        command(sub)
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
    mirror = sub.add_parser("mirror", help="operate on the Postgres mirror")
    mirror_commands = mirror.add_subparsers(dest="mirror", required=True, metavar="ACTION")
    grant = mirror_commands.add_parser(
        "grant",
        help="a read role of the mirror that sees one tenant's rows only (MESH_DATABASE_URL "
        "as a role that may create roles)",
    )
    grant.add_argument("--tenant", required=True, help="the tenant it reads (declared in config)")
    grant.add_argument("--role", required=True, help="the Postgres role (created if missing)")
    grant.add_argument("--login", action="store_true", help="the role may log in (NOLOGIN else)")
    grant.add_argument(
        "--password-env", metavar="VAR", default=None, help="variable holding its login password"
    )
    grant.set_defaults(run=_cmd_mirror_grant)
    add_deadletter_commands(sub)
    topics = sub.add_parser(
        "topics", help="Strimzi KafkaTopic/KafkaUser resources for the fleet's topics"
    )
    topics.add_argument("--cluster", required=True, help="the Strimzi Kafka cluster's name")
    topics.add_argument("--replicas", type=int, default=3, help="replication factor (3)")
    topics.add_argument(
        "--entity-retention-days",
        type=int,
        default=None,
        help="time retention on entity topics on top of compaction (default: none)",
    )
    topics.add_argument(
        "--user-auth", choices=("scram-sha-512", "tls"), default="scram-sha-512",
        help="how the workers' KafkaUser authenticates",
    )  # fmt: skip
    topics.add_argument("-o", "--output", type=Path, default=None, help="file (default: stdout)")
    topics.set_defaults(run=_cmd_topics)
    init = sub.add_parser("init", help="write the sample domain config and schemas to edit")
    init.add_argument("dir", nargs="?", type=Path, default=Path("."), help="where (default: .)")
    init.set_defaults(run=_cmd_init)
    sub.add_parser("config", help="print the effective settings, secrets masked").set_defaults(
        run=_cmd_config
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mesh`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    added = tooling_commands()
    parser = _parser(added)
    if argv and argv[0] in TOOLING_COMMANDS and argv[0] not in added:
        print(
            f"mesh: `mesh {argv[0]}` belongs to DictaMesh's tooling, which is not installed "
            "here: pip install dictamesh-tooling (in a checkout: make install)",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        # People watch `mesh dev` in a terminal.
        configure_logging(
            settings,
            log_format=console_unless_set(settings) if args.command in CONSOLE_COMMANDS else None,
        )
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
