"""The abort path: an abortable transaction error rewinds to the committed offsets and
restores the state, and the result is still exact (in-process, real broker)."""

from __future__ import annotations

import os

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from service_fixtures import edge_with, load_fleet, mismatches, read_output, total_records

from clients.settings import TopicNames
from consumers.service import FoldService, ServiceConfig
from consumers.service.edge import FoldEdge
from schemas import Violation

pytestmark = pytest.mark.integration
SET = AlterConfigOpType.SET


def test_rejected_record_aborts_rewinds_and_still_folds_exactly(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    manifest = load_fleet(kafka_bootstrap, unique_topics, runs=150, seed=71)
    # The broker rejects violation records over 2 KB: the transaction holding one fails
    # with an abortable error (the delivery fails, so commit_transaction must fail).
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource(
        "topic",
        unique_topics.violations,
        incremental_configs=[ConfigEntry("max.message.bytes", "2048", incremental_operation=SET)],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)
    edge = FoldEdge.default()
    poisoned = {"left": 2}

    def flaky_encode(violation: Violation) -> bytes:
        value = edge.encode_violation(violation)
        if poisoned["left"]:
            poisoned["left"] -= 1
            return value + os.urandom(4096)  # incompressible: lz4 cannot shrink it
        return value

    config = ServiceConfig.on_topics(
        {"bootstrap.servers": kafka_bootstrap},
        unique_topics,
        group="abort",
        until_idle=2,
        batch_size=500,
    )
    service = FoldService(config, edge=edge_with(encode_violation=flaky_encode))

    stats = service.run()

    assert poisoned["left"] == 0
    assert stats.aborts >= 1
    assert stats.consumed == total_records(manifest)  # the aborted share is not counted
    assert stats.balanced()
    assert mismatches(read_output(kafka_bootstrap, unique_topics), manifest) == []
