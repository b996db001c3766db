"""The Java-client partition table in tests/vectors against runfold's murmur2 and librdkafka.

``murmur2_partitions.json`` comes from Kafka's own ``Utils.murmur2`` (see Murmur2Vectors.java).
The murmur2 and partition_for runfold ships (:mod:`consumers.service.queries`, which finds a run's
partition for ``runs show/replay``) must agree with it on every key. That a real producer
(``partitioner=murmur2_random``) puts keys where the table says is checked in
tests/producers/test_producer_kafka.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consumers.service.queries import murmur2, partition_for

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "murmur2_partitions.json"


def _table() -> dict[str, Any]:
    return json.loads(VECTORS.read_text())


@pytest.mark.unit
def test_table_covers_the_promised_keys_and_counts() -> None:
    table = _table()
    assert table["partition_counts"] == [1, 3, 6, 12, 64]
    keys = [v["key"] for v in table["vectors"]]
    assert len(keys) == len(set(keys)) >= 200
    assert "" in keys and any(ord(ch) > 0xFFFF for key in keys for ch in key)


@pytest.mark.unit
def test_shipped_murmur2_agrees_with_the_java_table() -> None:
    for vector in _table()["vectors"]:
        key = vector["key"].encode("utf-8")
        assert murmur2(key) == vector["murmur2"], vector["key"]
        for count, partition in vector["partitions"].items():
            assert partition_for(key, int(count)) == partition, (vector["key"], count)
