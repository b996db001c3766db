"""The emitting side: what an agent embeds to publish its run, and a simulated fleet.

- :class:`RunRecorder` / :class:`AsyncRunRecorder`: number a run's events 1..n and end
  it exactly once (``graph_completed`` / ``graph_failed`` / cancelled).
- :class:`EventProducer`: the idempotent Kafka producer under them, accounting every
  delivery in a :class:`DeliveryReport`.
- :class:`Fleet`: deterministic simulated agents with fault injection and a ground-truth
  manifest; :func:`produce_fleet` sends a fleet through a producer.
"""

from __future__ import annotations

from producers.faults import FAULT_NAMES, FaultRates, FaultSpecError
from producers.fleet import Fleet, FleetConfig, FleetResult, RecordMeta, produce_fleet
from producers.kafka import (
    DEFAULT_PRODUCER_CONFIG,
    EVENT_PRODUCER_CONFIG,
    DeliveryReport,
    EventProducer,
    producer_config,
)
from producers.recorder import (
    AsyncRunHandle,
    AsyncRunRecorder,
    EventSink,
    ListSink,
    RunClosedError,
    RunHandle,
    RunRecorder,
)

__all__ = [
    "DEFAULT_PRODUCER_CONFIG",
    "EVENT_PRODUCER_CONFIG",
    "FAULT_NAMES",
    "AsyncRunHandle",
    "AsyncRunRecorder",
    "DeliveryReport",
    "EventProducer",
    "EventSink",
    "FaultRates",
    "FaultSpecError",
    "Fleet",
    "FleetConfig",
    "FleetResult",
    "ListSink",
    "RecordMeta",
    "RunClosedError",
    "RunHandle",
    "RunRecorder",
    "producer_config",
    "produce_fleet",
]
