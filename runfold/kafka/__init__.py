"""Local Kafka for development, tests and the demo: JVM broker from Maven jars, or Compose."""

from __future__ import annotations

from runfold.kafka.jars import KAFKA_VERSION, find_java, kafka_lib
from runfold.kafka.local import DEFAULT_PORT, LocalKafka, NodeStatus
from runfold.kafka.state import ClusterState, NodeState, default_home

__all__ = [
    "DEFAULT_PORT",
    "KAFKA_VERSION",
    "ClusterState",
    "LocalKafka",
    "NodeState",
    "NodeStatus",
    "default_home",
    "find_java",
    "kafka_lib",
]
