"""``mesh topics``: every topic a worker uses, as Strimzi resources with valid names."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mesh.app import create_app
from mesh.domain import load_domain
from mesh.settings import Settings
from mesh.topics import DAY_MS, fleet_topics, resource_name, strimzi_resources

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
KAFKA_TOPIC = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-",
    min_size=1,
    max_size=249,
).filter(lambda name: name not in (".", ".."))


def test_every_topic_a_worker_uses_is_listed(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, app_id="shop", topic_partitions=12)
    domain = load_domain(settings.domain_config)
    topics = {t.name: t for t in fleet_topics(settings, domain)}
    app = create_app(settings, domain).app
    used = {name for topic in app.topics for name in topic.topics}
    used |= {table.changelog_topic.get_topic_name() for table in app.tables.values()}
    assert used
    assert used <= set(topics)
    assert {domain.topic(t) for t in domain.entities} <= set(topics)
    assert "shop.dead_letters" in topics
    assert topics["shop-__assignor-__leader"].partitions == 1
    # The fleet generation: one partition (its first record is the generation), compacted.
    assert topics["shop-generation"].partitions == 1
    assert topics["shop-generation"].config == {"cleanup.policy": "compact"}
    # Dead-letter replays' re-read requests: one partition, compacted, read by every worker.
    assert topics["shop.source-rereads"].partitions == 1
    assert topics["shop.source-rereads"].config == {"cleanup.policy": "compact"}
    one_partition = {"shop-__assignor-__leader", "shop-generation", "shop.source-rereads"}
    assert {t.partitions for n, t in topics.items() if n not in one_partition} == {12}
    for name in used - {domain.topic(t) for t in domain.entities}:
        if name.endswith("-changelog"):
            assert topics[name].config == {"cleanup.policy": "compact"}
    for entity_type in domain.entities:
        assert topics[domain.topic(entity_type)].config == {"cleanup.policy": "compact"}


def test_time_retention_on_entity_topics_is_an_option(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    domain = load_domain(settings.domain_config)
    topics = {t.name: t for t in fleet_topics(settings, domain, entity_retention_days=30)}
    customers = topics[domain.topic("customer")]
    assert customers.config == {"cleanup.policy": "compact,delete", "retention.ms": 30 * DAY_MS}


def test_the_user_may_use_exactly_the_fleets_topics_and_groups(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    domain = load_domain(settings.domain_config)
    topics = fleet_topics(settings, domain)
    resources = strimzi_resources(topics, cluster="c1", app_id="dictamesh", replicas=3)
    assert [r["kind"] for r in resources] == ["KafkaTopic"] * len(topics) + ["KafkaUser"]
    acls = resources[-1]["spec"]["authorization"]["acls"]

    def allowed(kind: str, name: str) -> bool:
        return any(
            acl["resource"]["type"] == kind
            and (
                name == acl["resource"]["name"]
                if acl["resource"]["patternType"] == "literal"
                else name.startswith(acl["resource"]["name"])
            )
            for acl in acls
        )

    assert all(allowed("topic", t.name) for t in topics)
    assert not allowed("topic", "payroll.directus.entity_changed")
    assert allowed("group", "dictamesh")
    assert allowed("group", "dictamesh-mirror")
    assert not allowed("group", "other-app")
    for resource in resources[:-1]:
        assert resource["spec"]["replicas"] == 3
        assert resource["spec"]["config"]["min.insync.replicas"] == 2
        assert resource["metadata"]["labels"]["strimzi.io/cluster"] == "c1"


@given(KAFKA_TOPIC)
def test_resource_names_are_valid_kubernetes_names(topic: str) -> None:
    name = resource_name(topic)
    assert len(name) <= 253
    assert DNS_SUBDOMAIN.match(name), name


@given(KAFKA_TOPIC, KAFKA_TOPIC)
def test_distinct_topics_get_distinct_resources(a: str, b: str) -> None:
    if a != b:
        assert resource_name(a) != resource_name(b)
