"""The changelog on a real broker: moving an existing deployment over to it.

An older deployment kept each run's whole state (``runfold.RunState``) in
``agent-runs`` and had no changelog. The first service of the new layout finds the
changelog empty while offsets are committed: it restores each partition from the whole
states in ``agent-runs`` (and says so), folds on, and its first commit copies every run,
touched or not, to the changelog. The next restore reads the changelog alone. The
result equals the fleet's ground truth throughout.
"""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from service_fixtures import ALL_FAULTS, mismatches, read_output

from clients.settings import TopicNames
from consumers.run_view import holds_summary
from consumers.service import FoldService, ServiceConfig
from consumers.service.restore import read_latest_by_key
from producers import FaultRates, Fleet, FleetConfig
from producers.kafka import DEFAULT_PRODUCER_CONFIG
from schemas.codec import encode_event

pytestmark = pytest.mark.integration

_PARTS = [0, 1, 2]


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, int | None]]) -> None:
    producer = Producer({**DEFAULT_PRODUCER_CONFIG, "bootstrap.servers": bootstrap})
    for key, value, partition in records:
        if partition is None:
            producer.produce(topic, value, key=key)
        else:
            producer.produce(topic, value, key=key, partition=partition)
        producer.poll(0)
    assert producer.flush(60) == 0


def _latest(bootstrap: str, topic: str) -> dict[int, dict[bytes, bytes]]:
    restored = read_latest_by_key({"bootstrap.servers": bootstrap}, topic, _PARTS)
    return {p: part.latest for p, part in restored.items()}


def _config(bootstrap: str, topics: TopicNames, changelog: str) -> ServiceConfig:
    return ServiceConfig.on_topics(
        {"bootstrap.servers": bootstrap},
        topics.model_copy(update={"changelog": changelog}),
        group="moving-over",
        until_idle=2,
        batch_size=500,
    )


def test_an_existing_deployment_moves_over_to_the_changelog(
    kafka_bootstrap: str, unique_topics: TopicNames, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = Fleet(
        FleetConfig(runs=120, seed=91, faults=FaultRates.parse(ALL_FAULTS)),
        encode=lambda event: encode_event(event),
    )
    records = [(key, value, None) for key, value, _ in fleet.records()]
    half = len(records) // 2
    manifest = fleet.manifest()
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    scratch = unique_topics.changelog + "-scratch"
    futures = admin.create_topics([NewTopic(scratch, 3, 1, config={"cleanup.policy": "compact"})])
    for future in futures.values():
        future.result(30)
    try:
        # The older deployment: its first half folded, whole states left in agent-runs
        # (the service ran with a changelog elsewhere; its records are copied over the
        # summaries, as the old service wrote them), the real changelog still empty.
        _produce(kafka_bootstrap, unique_topics.events, records[:half])
        FoldService(_config(kafka_bootstrap, unique_topics, scratch)).run()
        old = _latest(kafka_bootstrap, scratch)
        _produce(
            kafka_bootstrap,
            unique_topics.runs,
            [(k, v, p) for p, latest in old.items() for k, v in latest.items()],
        )
        in_runs = _latest(kafka_bootstrap, unique_topics.runs)
        assert not any(holds_summary(v) for part in in_runs.values() for v in part.values())
        runs_before = sum(map(len, old.values()))

        # The new layout: restored from agent-runs once, folds on, copies to the changelog.
        _produce(kafka_bootstrap, unique_topics.events, records[half:])
        config = _config(kafka_bootstrap, unique_topics, unique_topics.changelog)
        with caplog.at_level(logging.INFO, logger="runfold.consume"):
            stats = FoldService(config).run()
        moved = [r.message for r in caplog.records if "has no record yet" in r.message]
        assert len(moved) == 3, moved  # one line per partition, naming it and its count
        assert sum(int(m.split("restoring its ")[1].split()[0]) for m in moved) == runs_before
        assert stats.restored_runs == runs_before and stats.balanced()
        folded = read_output(kafka_bootstrap, unique_topics)
        assert mismatches(folded, manifest) == []
        logged = _latest(kafka_bootstrap, unique_topics.changelog)
        assert {k.decode() for part in logged.values() for k in part} == set(folded.runs)
        touched = {key for key, _, _ in records[half:]}
        for p, latest in old.items():  # a run not touched again: copied byte for byte
            for key, value in latest.items():
                if key not in touched:
                    assert logged[p][key] == value

        # From now on the changelog alone: no migration, every run restored from it.
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="runfold.consume"):
            again = FoldService(config).run()
        assert not [r for r in caplog.records if "has no record yet" in r.message]
        assert again.restored_runs == len(folded.runs)
    finally:
        admin.delete_topics([scratch], operation_timeout=10)
