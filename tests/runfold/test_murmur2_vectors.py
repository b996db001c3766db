"""The Java-client partition table in tests/vectors: self-consistent, and what librdkafka does.

``murmur2_partitions.json`` comes from Kafka's own ``Utils.murmur2`` (see Murmur2Vectors.java).
A 15-line Python port must agree with it on every key, and a real producer with
``partitioner=murmur2_random`` must put keys on the partitions the table says.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "murmur2_partitions.json"


def _table() -> dict[str, Any]:
    return json.loads(VECTORS.read_text())


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c) as a signed 32-bit int, ported from Utils.java."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    length4 = len(data) // 4
    for i in range(length4):
        k = int.from_bytes(data[i * 4 : i * 4 + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = data[length4 * 4 :]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@pytest.mark.unit
def test_table_covers_the_promised_keys_and_counts() -> None:
    table = _table()
    assert table["partition_counts"] == [1, 3, 6, 12, 64]
    keys = [v["key"] for v in table["vectors"]]
    assert len(keys) == len(set(keys)) >= 200
    assert "" in keys and any(ord(ch) > 0xFFFF for key in keys for ch in key)


@pytest.mark.unit
def test_python_port_agrees_with_the_java_table() -> None:
    for vector in _table()["vectors"]:
        hashed = murmur2(vector["key"].encode("utf-8"))
        assert hashed == vector["murmur2"], vector["key"]
        for count, partition in vector["partitions"].items():
            assert (hashed & 0x7FFFFFFF) % int(count) == partition


@pytest.mark.integration
def test_librdkafka_murmur2_random_places_keys_like_java(
    kafka_bootstrap: str, topic_factory
) -> None:
    topic = topic_factory(partitions=6)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    placed: dict[str, int] = {}

    def record(err: Any, msg: Any) -> None:
        assert err is None, err
        placed[msg.key().decode("utf-8")] = msg.partition()

    vectors = [v for v in _table()["vectors"] if v["key"]]  # empty key: random partition
    for vector in vectors:
        producer.produce(topic, key=vector["key"].encode("utf-8"), value=b"x", on_delivery=record)
    assert producer.flush(30) == 0
    assert placed == {v["key"]: v["partitions"]["6"] for v in vectors}
