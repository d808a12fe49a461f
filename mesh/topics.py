"""The fleet's Kafka topics, and the Strimzi resources that manage them on a cluster.

Where topics are managed (Strimzi's topic operator, ``MESH_TOPIC_DECLARE=false``) they
must exist before the workers start, with the partition count the fleet routes by. The
list comes from the worker app itself (the topics it subscribes to, its tables'
changelogs) plus the topics it writes or its runtime declares, so it cannot drift from
what a worker uses.

Retention: entity topics and changelogs are compacted. A rebuilt catalog or mirror (new
volume, new Postgres) replays an entity topic from the start; with time retention an
entity unchanged for longer than the retention would be missing from the rebuild. Time
retention (``compact,delete``) is offered for deployments that accept that in exchange
for bounded disk, and then every source must be re-snapshotted to rebuild.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mesh.deadletter import dead_letter_topic
from mesh.domain import DomainConfig
from mesh.runtime.generation import GENERATION_TOPIC_CONFIG, generation_topic
from mesh.sagas.events import SAGA_CHANGED_TOPIC
from mesh.settings import Settings
from mesh.sources.rereads import REREAD_PARTITIONS, REREAD_TOPIC_CONFIG, reread_topic

DAY_MS = 24 * 3600 * 1000
UserAuth = Literal["scram-sha-512", "tls"]


@dataclass(frozen=True)
class FleetTopic:
    """One topic the fleet needs, with the configuration it is created with."""

    name: str
    partitions: int
    purpose: str
    config: dict[str, str | int] = field(default_factory=dict)


def _subscribed_and_changelogs(
    settings: Settings, domain: DomainConfig
) -> tuple[set[str], set[str]]:
    """The topics a worker app consumes and its tables' changelogs, read off a worker app
    built (not started) in a throwaway state directory."""
    from mesh.app import create_app

    with tempfile.TemporaryDirectory(prefix="dictamesh-topics-") as scratch:
        context = create_app(settings.model_copy(update={"state_dir": Path(scratch)}), domain)
        app = context.app
        changelogs = {table.changelog_topic.get_topic_name() for table in app.tables.values()}
        subscribed = {name for topic in app.topics for name in topic.topics}
    return subscribed, changelogs


def fleet_topics(
    settings: Settings, domain: DomainConfig, *, entity_retention_days: int | None = None
) -> list[FleetTopic]:
    """Every topic of the fleet ``settings`` and ``domain`` describe, in a stable order.

    ``entity_retention_days``: time retention on the entity topics on top of compaction
    (see the module's docs); None keeps every entity's latest event forever.
    """
    partitions = settings.topic_partitions
    entity_topics = set(domain.topic_types())
    subscribed, changelogs = _subscribed_and_changelogs(settings, domain)
    entity_config: dict[str, str | int] = {"cleanup.policy": "compact"}
    if entity_retention_days is not None:
        entity_config = {
            "cleanup.policy": "compact,delete",
            "retention.ms": entity_retention_days * DAY_MS,
        }
    topics = [
        FleetTopic(name, partitions, "entity changes", dict(entity_config))
        for name in sorted(entity_topics)
    ]
    topics += [
        # Re-keyed relation changes, consumed at once by the key's owner; the relation
        # indexes they build are changelogged, so a week covers any consumer outage.
        FleetTopic(name, partitions, "relation changes", {"cleanup.policy": "delete",
                                                          "retention.ms": 7 * DAY_MS})
        for name in sorted(subscribed - entity_topics)
    ]  # fmt: skip
    topics += [
        FleetTopic(name, partitions, "table changelog", {"cleanup.policy": "compact"})
        for name in sorted(changelogs)
    ]
    topics.append(
        FleetTopic(
            dead_letter_topic(settings.app_id),
            partitions,
            "dead letters",
            {"cleanup.policy": "delete", "retention.ms": 30 * DAY_MS},
        )
    )
    # Re-read requests of dead-letter replays, deleted once done (mesh.sources.rereads).
    topics.append(
        FleetTopic(
            reread_topic(settings.app_id),
            REREAD_PARTITIONS,
            "source re-read requests",
            dict(REREAD_TOPIC_CONFIG),
        )
    )
    if settings.sagas:
        # Every saga transition (mesh.sagas.events), for consumers that follow sagas.
        topics.append(
            FleetTopic(
                SAGA_CHANGED_TOPIC,
                partitions,
                "saga transitions",
                {"cleanup.policy": "delete", "retention.ms": 30 * DAY_MS},
            )
        )
    # Faust's partition assignor elects its leader through this one-partition topic.
    topics.append(FleetTopic(f"{settings.app_id}-__assignor-__leader", 1, "group leader"))
    # The fleet generation the shared cache is filed under (mesh.runtime.generation): one
    # partition, so its first record is the same for every worker. Recreating the fleet's
    # data means recreating this topic too.
    topics.append(
        FleetTopic(
            generation_topic(settings.app_id),
            1,
            "fleet generation",
            dict(GENERATION_TOPIC_CONFIG),
        )
    )
    return topics


def resource_name(topic: str) -> str:
    """A Kubernetes resource name for ``topic`` (lowercase DNS subdomain). A name that had
    to change gets a short hash of the real one, so two topics never share a resource."""
    cleaned = re.sub(r"[^a-z0-9.]+", "-", topic.lower())
    labels = [label.strip("-") for label in cleaned.split(".")]
    name = ".".join(label for label in labels if label)
    if name == topic:
        return name
    digest = hashlib.sha256(topic.encode()).hexdigest()[:8]
    base = name[: 253 - len(digest) - 1].rstrip("-.")
    return f"{base}-{digest}" if base else digest


def strimzi_resources(
    topics: list[FleetTopic],
    *,
    cluster: str,
    app_id: str,
    replicas: int,
    user_auth: UserAuth = "scram-sha-512",
) -> list[dict[str, Any]]:
    """``KafkaTopic`` resources for ``topics`` and the ``KafkaUser`` the workers connect as
    (Strimzi ``kafka.strimzi.io/v1``), for the Kafka cluster named ``cluster``."""
    labels = {"strimzi.io/cluster": cluster, "app.kubernetes.io/part-of": "dictamesh"}
    resources: list[dict[str, Any]] = []
    for topic in topics:
        config = dict(topic.config)
        if replicas >= 3:  # an acknowledged write survives the loss of one broker
            config["min.insync.replicas"] = 2
        resources.append(
            {
                "apiVersion": "kafka.strimzi.io/v1",
                "kind": "KafkaTopic",
                "metadata": {
                    "name": resource_name(topic.name),
                    "labels": labels,
                    "annotations": {"dictamesh.io/purpose": topic.purpose},
                },
                "spec": {
                    "topicName": topic.name,
                    "partitions": topic.partitions,
                    "replicas": replicas,
                    "config": config,
                },
            }
        )
    resources.append(_user(topics, cluster=cluster, app_id=app_id, labels=labels, auth=user_auth))
    return resources


def _user(
    topics: list[FleetTopic],
    *,
    cluster: str,
    app_id: str,
    labels: dict[str, str],
    auth: UserAuth,
) -> dict[str, Any]:
    def acl(kind: str, name: str, pattern: str, operations: list[str]) -> dict[str, Any]:
        return {
            "resource": {"type": kind, "name": name, "patternType": pattern},
            "operations": operations,
        }

    topic_ops = ["Describe", "DescribeConfigs", "Read", "Write"]
    # The app's own topics (changelogs, relations, dead letters, the assignor's) all start
    # with the app id; the entity topics are named by the domain, one literal ACL each.
    acls = [acl("topic", app_id, "prefix", topic_ops)]
    acls += [
        acl("topic", topic.name, "literal", topic_ops)
        for topic in topics
        if not topic.name.startswith(app_id)
    ]
    # The worker group (<app_id>) and the mirror's (<app_id>-mirror).
    acls.append(acl("group", app_id, "prefix", ["Describe", "Read"]))
    return {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaUser",
        "metadata": {"name": resource_name(app_id), "labels": labels},
        "spec": {
            "authentication": {"type": auth},
            "authorization": {"type": "simple", "acls": acls},
        },
    }
