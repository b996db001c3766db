"""The Kafka Streams peer of ``runfold bench``: built with Maven, folds a small fleet, checked.

Integration: builds ``bench/peers/streams`` (once; later runs reuse the build keyed by the
sources' hash), runs it against the session broker over a few hundred events and asserts
its committed state (read back from its changelog) equals the simulator's ground truth.
Skipped with the reason when Java 17+ or Maven is missing.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

import pytest

from bench.peers import streams_peer
from bench.peers.runner import STREAMS, PeerStream, run_peer
from bench.runfold_stages import Workload, expected_state, runfold_produce
from bench.workloads import VARIANTS, load, peer_reference


@pytest.mark.unit
def test_streams_state_layout_reads_back() -> None:
    # The layout StreamsFold.RunState.serialize writes (big-endian, see its Javadoc).
    value = struct.pack(">b6q", 2, 7, 6, 1, 0, 10, 20) + b"\x00\x02ab\x00\x00"
    assert streams_peer.decode_state(b"run-1", value) == ("run-1", ("FAILED", 7, 6))


def _run(kafka_bootstrap: str, topic: str, total: int, expected: Any,
         stream: PeerStream) -> Any:
    missing = streams_peer.missing_tools()
    if missing is not None:
        pytest.skip(f"Kafka Streams peer: {missing}")
    lines: list[str] = []
    measured = run_peer(
        STREAMS, kafka_bootstrap, topic, 3, total, expected, create_venv=True, timeout=240,
        echo=lines.append, group=f"test-streams-{uuid.uuid4().hex[:8]}", stream=stream,
    )
    assert measured.value is not None, measured.note
    assert measured.valid, measured.note
    assert measured.extra["own"]["processed"] == total
    assert measured.extra["cpu_seconds"] is not None
    return measured


@pytest.mark.integration
def test_streams_peer_folds_to_the_manifest(kafka_bootstrap: str, topic_factory: Any) -> None:
    topic = topic_factory(3)
    _, fleet = runfold_produce(kafka_bootstrap, topic, Workload(runs=12))
    expected = expected_state(fleet)
    total = sum(events for _, events, _ in expected.values())
    _run(kafka_bootstrap, topic, total, expected, PeerStream())


@pytest.mark.integration
@pytest.mark.parametrize("name", ["confluent", "faulty"])
def test_streams_peer_reads_the_other_streams(
    kafka_bootstrap: str, topic_factory: Any, name: str
) -> None:
    variant = next(v for v in VARIANTS if v.name == name)
    records, expected = variant.build(1000)
    topic = topic_factory(3)
    load(kafka_bootstrap, topic, records)
    if variant.faults.any:
        expected = peer_reference(records)
    _run(kafka_bootstrap, topic, len(records), expected, PeerStream(framing=variant.framing))
