"""Kafka's Java client agrees with runfold on a real broker.

* Placement: every record runfold's producer wrote sits on the partition the Java
  producer's ``BuiltInPartitioner.partitionForKey`` picks for its key (murmur2).
* Folded state: after ``runfold consume`` has folded a fleet, a plain Java consumer
  (read_committed) decodes every ``agent-runs`` value as a ``runfold.RunSummary`` with
  Avro's ``BinaryMessageDecoder``, and the ``Run`` inside is the fleet's ground truth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import java_support
import pytest
from confluent_kafka import Consumer
from java_support import JavaInterop, edge_events

from clients.settings import RunfoldSettings, TopicNames
from producers import FaultRates
from producers.fleet import Fleet, FleetConfig, produce_fleet
from producers.kafka import EventProducer
from schemas import Timestamp
from schemas.codec import encode_event

pytestmark = [pytest.mark.interop, pytest.mark.integration]
java_interop = java_support.java_interop  # the session fixture, shared with test_java_avro

# Keys whose UTF-8 length is not a multiple of 4 exercise murmur2's tail (a UUID's 36
# bytes never do), non-ASCII ones its signed-byte arithmetic; the empty key is hashed
# (not spread at random like a null key) by both clients.
_ODD_KEYS = ["", "a", "ab", "abc", "abcde", "\u00e9", "\u65e5\u672c", "\U0001f680",
             "run-\u00fcber-7", "x" * 1001]


def _produce(settings: RunfoldSettings, topic: str, fleet: Fleet, extra: int = 0) -> int:
    """Send the fleet (and ``extra`` odd-keyed events) with runfold's EventProducer."""
    with EventProducer(topic, settings=settings) as producer:
        result = produce_fleet(fleet, producer)
        sent = result.records
        if extra:
            event = edge_events()[0]
            for index in range(extra):
                producer.produce(_ODD_KEYS[index % len(_ODD_KEYS)], encode_event(event))
            sent += extra
        report = producer.flush(60)
    assert report.delivered == sent and report.failed == 0, report.summary()
    return sent


@pytest.mark.parametrize("partitions", [7, 12])
def test_java_partitioner_agrees_with_runfold_placement(
    java_interop: JavaInterop,
    kafka_settings: RunfoldSettings,
    topic_factory: Any,
    partitions: int,
) -> None:
    """Every key of a produced stream sits where the Java producer would put it."""
    topic = topic_factory(partitions)
    fleet = Fleet(FleetConfig(runs=150, seed=5 + partitions))
    sent = _produce(kafka_settings, topic, fleet, extra=len(_ODD_KEYS))

    [summary] = java_interop.run(
        "check-partitions", kafka_settings.bootstrap_servers, topic, str(partitions)
    )

    assert summary["partitions"] == partitions
    assert summary["records"] == sent
    assert summary["keys"] == 150 + len(_ODD_KEYS)
    assert summary["null_keys"] == 0
    assert summary["mismatches"] == []
    assert (summary["placed_as_java"], summary["misplaced"]) == (sent, 0)
    assert summary["keys_on_several_partitions"] == 0
    # Decoded by Avro's BinaryMessageDecoder, all of them.
    decoded = (summary["decoded"], summary["undecodable"])
    assert decoded == (sent, 0), summary["undecodable_examples"]
    # Not all on one partition: a placement check over one partition would prove little.
    assert len(summary["records_per_partition"]) == partitions


def _warm_group_coordinator(bootstrap: str, topic: str, deadline: float = 90.0) -> None:
    """Join a throwaway group until it is assigned ``topic``'s partitions.

    ``runfold consume --until-idle`` counts idle time from its start, before its group is
    joined; on a fresh broker the first join (which creates ``__consumer_offsets``) can take
    longer than that, and the service would stop having consumed nothing.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"warm-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe([topic])
        stop = time.monotonic() + deadline
        while not consumer.assignment():
            assert time.monotonic() < stop, f"no group assignment for {topic} in {deadline}s"
            consumer.poll(0.5)
    finally:
        consumer.close()


def _consume_until_idle(
    bootstrap: str, topics: TopicNames, group: str, log: Path
) -> dict[str, Any]:
    prefix = topics.events[: -len(TopicNames().events)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFOLD_")}
    done = subprocess.run(
        [sys.executable, "-m", "runfold", "consume", "--bootstrap-servers", bootstrap,
         "--prefix", prefix, "--group", group, "--until-idle", "3", "--stats-json"],
        capture_output=True, env=env, timeout=180, check=False,
    )
    log.write_bytes(done.stderr)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    stats: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return stats


def _union(value: dict[str, Any] | None) -> Any:
    """The value of an Avro-JSON union branch (``{"long": 5}`` -> 5, ``null`` -> None)."""
    return None if value is None else next(iter(value.values()))


def test_java_reads_the_folded_runs(
    java_interop: JavaInterop,
    kafka_settings: RunfoldSettings,
    unique_topics: TopicNames,
    tmp_path: Path,
) -> None:
    """agent-runs, written by the folding service in transactions, is plain Avro to Java."""
    faults = FaultRates.parse("reorder=0.2,dup=0.2,conflict=0.2,gap=0.1,after_end=0.2")
    fleet = Fleet(FleetConfig(runs=40, seed=21, faults=faults))
    _produce(kafka_settings, unique_topics.events, fleet)
    manifest = fleet.manifest()
    _warm_group_coordinator(kafka_settings.bootstrap_servers, unique_topics.events)
    stats = _consume_until_idle(kafka_settings.bootstrap_servers, unique_topics,
                                f"java-interop-{uuid.uuid4().hex[:8]}", tmp_path / "consume.log")
    assert stats["consumed"] == manifest["totals"]["records"], stats

    lines = java_interop.run("read-runs", kafka_settings.bootstrap_servers, unique_topics.runs)
    summary = lines.pop()["summary"]
    assert summary["records"] == len(lines) > 0
    assert (summary["decoded"], summary["failed"], summary["tombstones"]) == (len(lines), 0, 0), [
        line for line in lines if not line["ok"]][:3]

    latest: dict[str, dict[str, Any]] = {}
    for line in lines:  # offsets grow within a partition, and a run has one partition
        latest[line["key"]] = line
    assert set(latest) == {entry["run_id"] for entry in manifest["runs"]}
    for entry in manifest["runs"]:
        line = latest[entry["run_id"]]
        state, want = line["avro"], entry["run"]
        run = state["run"]
        where = f"run {entry['run_id']} (faults {entry['faults']})"
        assert run["run_id"] == line["run_id_uuid"] == want["run_id"], where
        assert run["agent_spec_digest"] == want["agent_spec_digest"], where
        assert run["git_sha"] == want["git_sha"], where
        assert run["status"] == want["status"], where
        assert run["started_at"] == int(Timestamp.parse(want["started_at"])), where
        assert line["started_at_instant"] == want["started_at"], where  # Instant == chrono text
        finished = _union(run["finished_at"])
        assert line["finished_at_instant"] == want["finished_at"], where
        assert finished == (None if want["finished_at"] is None
                            else int(Timestamp.parse(want["finished_at"]))), where
        assert json.loads(run["inputs"]) == want["inputs"], where
        outputs = _union(run["outputs"])
        assert (None if outputs is None else json.loads(outputs)) == want["outputs"], where
        assert _union(run["final_state_digest"]) == want["final_state_digest"], where
        assert state["counters"]["events_applied"] == entry["applied"], where
        seen = sorted((v["kind"], v["first_seq"], v["last_seq"])
                      for v in state["recent_violations"])
        assert seen == sorted((v["kind"], v["first_seq"], v["last_seq"])
                              for v in entry["violations"]), where
