"""The producer a user writes by hand with the Confluent client: the anchor of ``RunRecorder``.

``SerializingProducer`` with Confluent's ``AvroSerializer`` (schema registry ``mock://``,
the schema registered on first use), a ``StringSerializer`` key, and runfold's producer
settings (``acks=all``, idempotence, lz4, linger 20 ms). Per event, inside the clock, the
user's code builds the record dict (run id, seq, wall-clock nanoseconds, the kind's fields,
the payload as JSON text) and calls ``produce``; the kinds' fields and the payload objects
are the agent's own data, built beforehand, as ``RunRecorder.emit`` gets them.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.kafka_env import BenchError
from bench.results import Measurement
from bench.runfold_stages import Workload, per_cpu
from producers.kafka import DEFAULT_PRODUCER_CONFIG
from schemas.codec import EventCodec
from schemas.records import model_to_record

__all__ = ["REGISTRY", "hand_produce"]

STAGE = "anchors"
REGISTRY = "mock://runfold-bench-hand"


def _steps(workload: Workload) -> list[tuple[str, int, Any, Any]]:
    """``(run_id, seq, kind tuple, payload object)`` per event, in the fleet's order."""
    codec = EventCodec()
    steps = []
    for event in workload.events():
        record = model_to_record(event, codec.current.parsed)
        steps.append((record["run_id"], record["seq"], record["kind"], event.payload))
    return steps


def hand_produce(bootstrap: str, topic: str, workload: Workload) -> Measurement:
    """``SerializingProducer`` + ``AvroSerializer`` over the workload's events, flush included."""
    from confluent_kafka import SerializingProducer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import StringSerializer

    steps = _steps(workload)
    registry = SchemaRegistryClient.new_client({"url": REGISTRY})
    schema_text = EventCodec().current.schema_text
    failed = 0

    def on_delivery(err: object, _msg: object) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    producer = SerializingProducer({
        **DEFAULT_PRODUCER_CONFIG,
        "bootstrap.servers": bootstrap,
        "key.serializer": StringSerializer("utf_8"),
        "value.serializer": AvroSerializer(registry, schema_text),
    })
    producer.list_topics(topic, timeout=30)  # connected before the clock starts
    dumps = json.dumps
    started = time.perf_counter()
    cpu = time.process_time()
    for sent, (run_id, seq, kind, payload) in enumerate(steps, start=1):
        value = {"run_id": run_id, "seq": seq, "timestamp": time.time_ns(), "kind": kind,
                 "payload": dumps(payload, separators=(",", ":"))}
        while True:
            try:
                producer.produce(topic, key=run_id, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if sent % 1000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    cpu = time.process_time() - cpu
    seconds = time.perf_counter() - started
    if left or failed:
        raise BenchError(f"hand-written producer: {left} records not flushed, {failed} failed")
    return Measurement(
        "client.serializing", STAGE,
        "hand-written: SerializingProducer + AvroSerializer (mock://)", len(steps) / seconds,
        "ev/s",
        detail=f"{len(steps):,} events of {workload.runs:,} runs{per_cpu(len(steps), cpu)}; "
        "timed: the record dict (timestamp, payload JSON), Confluent's Avro serializer, "
        "produce (acks=all idempotent lz4 linger 20 ms, a delivery callback per record), "
        "flush",
        extra={"cpu_seconds": cpu, "seconds": seconds},
    )
