"""Local Kafka for development, tests and the demo: JVM broker from Maven jars, or Compose."""

from __future__ import annotations

from clients.cluster_state import ClusterState, NodeState, default_home
from runfold.kafka.jars import KAFKA_VERSION, find_java, kafka_lib
from runfold.kafka.local import DEFAULT_PORT, LocalKafka, NodeStatus

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
