"""Topic specs (unit) and ensure_topics / `runfold topics create` against the broker."""

from __future__ import annotations

import uuid

import pytest
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from clients.settings import TopicNames
from runfold.cli import main
from runfold.topics import DLQ_RETENTION_MS, ensure_topics, topic_specs
from schemas.errors import ConfigError, KafkaSetupError


@pytest.mark.unit
def test_specs_follow_design_section_3() -> None:
    specs = {s.name: s for s in topic_specs(TopicNames(), partitions=6, replication=3)}
    assert set(specs) == {
        "agent-run-events",
        "agent-runs",
        "agent-run-violations",
        "agent-run-events-dlq",
        "agent-runs-changelog",
    }
    assert {s.partitions for s in specs.values()} == {6}  # runs co-partitioned with events
    assert specs["agent-runs"].config["cleanup.policy"] == "compact"
    assert specs["agent-runs-changelog"].config["cleanup.policy"] == "compact"
    limit = specs["agent-runs"].config["max.message.bytes"]
    assert specs["agent-runs-changelog"].config["max.message.bytes"] == limit
    assert "cleanup.policy" not in specs["agent-run-events"].config
    assert specs["agent-run-events-dlq"].config["retention.ms"] == str(DLQ_RETENTION_MS)
    assert {s.config["min.insync.replicas"] for s in specs.values()} == {"2"}
    single = topic_specs(TopicNames(), partitions=1, replication=1)
    assert {s.config["min.insync.replicas"] for s in single} == {"1"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("partitions", "replication", "field"), [(0, 1, "partitions"), (3, 0, "replication")]
)
def test_specs_reject_nonsense(partitions: int, replication: int, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        topic_specs(TopicNames(), partitions, replication)


@pytest.mark.unit
def test_unreachable_broker_is_a_setup_error() -> None:
    with pytest.raises(KafkaSetupError, match="runfold kafka up"):
        ensure_topics({"bootstrap.servers": "127.0.0.1:1"}, TopicNames(), 1, 1, timeout=1.0)


def _configs(admin: AdminClient, topic: str) -> dict[str, str]:
    resource = ConfigResource("topic", topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return {name: entry.value for name, entry in entries.items()}


def test_ensure_topics_creates_once_and_reports_partition_mismatch(
    kafka_admin: AdminClient,
) -> None:
    names = TopicNames().prefixed(f"test-{uuid.uuid4().hex[:8]}-")
    first = ensure_topics(kafka_admin, names, partitions=4)
    assert sorted(first.created) == sorted(names.all()) and first.ok

    metadata = kafka_admin.list_topics(timeout=30)
    for name in names.all():
        assert len(metadata.topics[name].partitions) == 4
        # Default replication is min(3, brokers): 1 on the single test broker.
        assert len(metadata.topics[name].partitions[0].replicas) == min(3, len(metadata.brokers))
    assert _configs(kafka_admin, names.runs)["cleanup.policy"] == "compact"
    assert _configs(kafka_admin, names.changelog)["cleanup.policy"] == "compact"
    assert _configs(kafka_admin, names.events)["cleanup.policy"] == "delete"
    assert _configs(kafka_admin, names.dlq)["retention.ms"] == str(DLQ_RETENTION_MS)

    again = ensure_topics(kafka_admin, names, partitions=4)
    assert again.created == [] and sorted(again.existing) == sorted(names.all()) and again.ok

    different = ensure_topics(kafka_admin, names, partitions=5)
    assert not different.ok
    assert f"{names.events} has 4 partitions, expected 5" in different.mismatches
    kafka_admin.delete_topics(names.all(), operation_timeout=10)


def test_topics_create_command_is_idempotent(
    kafka_bootstrap: str, kafka_admin: AdminClient
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}-"
    args = [
        "topics",
        "create",
        "--partitions",
        "2",
        "--prefix",
        prefix,
        "--bootstrap-servers",
        kafka_bootstrap,
    ]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert f"created {prefix}agent-runs" in first.output
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0
    assert f"exists  {prefix}agent-runs" in second.output
    mismatch = CliRunner().invoke(main, [*args[:2], "--partitions", "3", *args[4:]])
    assert mismatch.exit_code == 1
    assert "MISMATCH" in mismatch.output
    kafka_admin.delete_topics(TopicNames().prefixed(prefix).all(), operation_timeout=10)
