"""``until_idle`` counts only while the service owns (assigned and restored) partitions.

On a fresh broker the first group join can take longer than ``--until-idle``; a clock
started at the loop's first line made ``runfold consume --until-idle S`` exit after S
seconds having folded nothing.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer
from service_fixtures import load_fleet, total_records

from clients.settings import TopicNames
from consumers.service import FoldService, ServiceConfig

pytestmark = pytest.mark.integration


def test_idle_clock_starts_once_partitions_are_assigned(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    manifest = load_fleet(kafka_bootstrap, unique_topics, runs=20, faults="")
    group = f"test-idle-{uuid.uuid4().hex[:8]}"
    # A member that joined the group and then stopped polling holds the service's join
    # up for its rebalance timeout (its max.poll.interval.ms): a join that takes longer
    # than --until-idle, as the first one on a fresh broker can.
    blocker = Consumer({
        "bootstrap.servers": kafka_bootstrap, "group.id": group,
        "session.timeout.ms": 6000, "max.poll.interval.ms": 8000,
        "enable.auto.commit": False, "log_level": 2,
    })
    blocker.subscribe([unique_topics.events])
    deadline = time.monotonic() + 30
    while not blocker.assignment():
        assert time.monotonic() < deadline, "the blocking member never got its partitions"
        blocker.poll(0.1)
    config = ServiceConfig.on_topics(
        {"bootstrap.servers": kafka_bootstrap},
        unique_topics,
        group=group,
        until_idle=2.0,
        txn_interval_ms=100,
        consumer_overrides={"log_level": 2},
        producer_overrides={"log_level": 2},
    )
    started = time.monotonic()
    try:
        stats = FoldService(config).run()
    finally:
        # The blocker was put out of the group while it did not poll; its revoke waits in
        # its queue. Served first by a poll, while the group handler is alive: served by
        # close() instead, the rebalance callback's unassign can wait forever for a handler
        # that is shutting down (seen once in CI; cf. librdkafka #4041).
        blocker.poll(0.5)
        blocker.close()
    took = time.monotonic() - started
    # The join waited out the blocker (a clock started at the first line gave up at 2 s,
    # having folded nothing); then everything was folded, then 2 s idle ended the run.
    assert took > 4.0, f"the join took {took:.1f}s: not slow enough to test anything"
    assert stats.rebalances >= 1
    assert stats.consumed == total_records(manifest)
    assert took < 60
