"""Records are consumed in chunks of at most CONSUME_CHUNK, while a transaction still
gathers batch_size events over many chunks (in-process, real broker)."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Message
from service_fixtures import load_fleet, mismatches, read_output, total_records

from clients.settings import TopicNames
from consumers.service import FoldService, ServiceConfig
from consumers.service.loop import CONSUME_CHUNK

pytestmark = pytest.mark.integration


class _Counted(FoldService):
    """The service, noting how many records each turn of its loop was handed."""

    chunks: list[int]

    def _next_records(self, consumer: Consumer) -> list[Message]:
        msgs = super()._next_records(consumer)
        self.chunks.append(len(msgs))
        return msgs


def test_transactions_span_chunks_of_at_most_consume_chunk(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    manifest = load_fleet(kafka_bootstrap, unique_topics, runs=400, seed=5)
    records = total_records(manifest)
    assert records > 3 * CONSUME_CHUNK
    config = ServiceConfig.on_topics(
        {"bootstrap.servers": kafka_bootstrap},
        unique_topics,
        group="chunks",
        until_idle=2,
        batch_size=records,  # one transaction could hold them all
        txn_interval_ms=60_000,
    )
    service = _Counted(config)
    service.chunks = []

    stats = service.run()

    assert max(service.chunks) == CONSUME_CHUNK  # the whole backlog was there to take
    assert sum(service.chunks) == records
    # Committed by batch_size, not per chunk: fewer transactions than chunks read.
    assert stats.transactions < sum(1 for size in service.chunks if size) / 2
    assert stats.consumed == records
    assert mismatches(read_output(kafka_bootstrap, unique_topics), manifest) == []
