"""The anchors runfold is compared with: what the client library and the broker can do alone.

- Client ceiling: confluent-kafka producing runfold's own encoded records (same keys,
  same bytes, same producer settings as runfold: acks=all, idempotence, lz4, linger),
  and a plain consumer reading them; no Avro, no models, no fold.
- Broker ceiling: Kafka's ``ProducerPerformance`` / ``ConsumerPerformance`` (the
  ``kafka-tools`` jar resolved with the broker's jars) with the same record count, the
  average record size and the same producer settings.
"""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Sequence

from confluent_kafka import Consumer, Producer

from bench.kafka_env import BenchError
from bench.results import Measurement
from bench.runfold_stages import per_cpu
from producers.kafka import EVENT_PRODUCER_CONFIG

__all__ = [
    "broker_consume",
    "broker_produce",
    "client_consume",
    "client_produce",
    "runfold_producer_settings",
]

STAGE = "anchors"


def runfold_producer_settings() -> dict[str, object]:
    """EventProducer's settings (failure-only delivery reports included)."""
    return dict(EVENT_PRODUCER_CONFIG)


def client_produce(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes]]
) -> Measurement:
    """confluent-kafka ``produce()`` of ready bytes, until every record is acknowledged."""
    conf = {**runfold_producer_settings(), "bootstrap.servers": bootstrap}
    failed = 0

    def on_delivery(err: object, _msg: object) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    producer = Producer({**conf, "on_delivery": on_delivery})
    producer.list_topics(topic, timeout=30)  # connected before the clock starts
    started = time.perf_counter()
    cpu = time.process_time()
    since_poll = 0
    produce = producer.produce
    for key, value in records:
        while True:
            try:
                produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        since_poll += 1
        if since_poll >= 1000:  # as EventProducer does: serve delivery reports now and then
            since_poll = 0
            producer.poll(0)
    left = producer.flush(120)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    size = sum(len(v) for _, v in records) / max(1, len(records))
    if left or failed:
        return Measurement.missing(
            "client.produce", STAGE, "client ceiling: confluent-kafka produce", "ev/s",
            f"{left} records not flushed, {failed} failed",
        )
    return Measurement(
        "client.produce", STAGE, "client ceiling: confluent-kafka produce",
        len(records) / seconds, "ev/s",
        detail=f"{len(records):,} pre-encoded records, {size:.0f} B avg"
        f"{per_cpu(len(records), cpu)}, acks=all idempotent "
        f"{conf['compression.type']} linger {conf['linger.ms']} ms",
        extra={"cpu_seconds": cpu},
    )


def client_consume(bootstrap: str, topic: str, expected: int, timeout: float) -> Measurement:
    """A plain confluent-kafka consumer reading ``expected`` records (first to last record)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-client-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    count = 0
    first = last = 0.0
    deadline = time.monotonic() + timeout
    try:
        consumer.subscribe([topic])
        while count < expected:
            if time.monotonic() > deadline:
                raise BenchError(f"read {count} of {expected} records of {topic} in {timeout}s")
            # Never ask for more than is left: consume() waits out its timeout for a batch
            # it cannot fill, and the last call once added up to a second to the time.
            msgs = consumer.consume(num_messages=min(10_000, expected - count), timeout=1.0)
            if not msgs:
                continue
            if not count:
                first = time.perf_counter()
            for msg in msgs:
                if msg.error() is None:
                    count += 1
            last = time.perf_counter()
    finally:
        consumer.close()
    return Measurement(
        "client.consume", STAGE, "client ceiling: confluent-kafka consume",
        count / (last - first) if last > first else None, "ev/s",
        detail=f"{count:,} records, consume(10000) batches, no decoding",
    )


def _java_tool(java: str, lib: str, tool: str, args: list[str], timeout: float) -> str:
    cmd = [java, "-Xmx512m", "-cp", f"{lib}/*", f"org.apache.kafka.tools.{tool}", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{tool} did not finish within {timeout:.0f}s") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BenchError(f"{tool} exited with {done.returncode}: {' | '.join(tail)}")
    return done.stdout


def broker_produce(
    java: str, lib: str, bootstrap: str, topic: str, records: int, record_size: int,
    timeout: float,
) -> Measurement:
    """``ProducerPerformance`` with runfold's producer settings (its own rate and latency)."""
    conf = runfold_producer_settings()
    props = [
        f"bootstrap.servers={bootstrap}",
        "acks=all",
        "enable.idempotence=true",
        f"compression.type={conf['compression.type']}",
        f"linger.ms={conf['linger.ms']}",
        f"batch.size={conf['batch.size']}",
    ]
    out = _java_tool(
        java, lib, "ProducerPerformance",
        ["--topic", topic, "--num-records", str(records), "--record-size", str(record_size),
         "--throughput", "-1", "--producer-props", *props],
        timeout,
    )
    final = [ln for ln in out.splitlines() if " records sent, " in ln][-1:]
    match = re.search(r"([\d.]+) records/sec", final[0]) if final else None
    if match is None:
        raise BenchError(f"ProducerPerformance printed no summary: {out[-300:]}")
    return Measurement(
        "broker.produce", STAGE, "broker ceiling: ProducerPerformance",
        float(match.group(1)), "ev/s",
        detail=f"{records:,} records of {record_size} B, same acks/idempotence/compression/linger",
    )


def broker_consume(
    java: str, lib: str, bootstrap: str, topic: str, records: int, timeout: float
) -> Measurement:
    """``ConsumerPerformance`` reading ``records`` (fetch rate, the group join excluded)."""
    out = _java_tool(
        java, lib, "ConsumerPerformance",
        ["--bootstrap-server", bootstrap, "--topic", topic, "--messages", str(records),
         "--group", f"bench-cp-{uuid.uuid4().hex[:8]}", "--timeout", str(int(timeout * 1000))],
        timeout + 30,
    )
    lines = [ln for ln in out.splitlines() if ln.strip()]
    header_at = next((i for i, ln in enumerate(lines) if "nMsg.sec" in ln), None)
    if header_at is None or header_at + 1 >= len(lines):
        raise BenchError(f"ConsumerPerformance printed no result: {out[-300:]}")
    names = [c.strip() for c in lines[header_at].split(",")]
    values = [c.strip() for c in lines[header_at + 1].split(",")]
    row = dict(zip(names, values, strict=False))
    return Measurement(
        "broker.consume", STAGE, "broker ceiling: ConsumerPerformance",
        float(row["fetch.nMsg.sec"]), "ev/s",
        detail=f"{int(float(row['data.consumed.in.nMsg'])):,} records (fetch.nMsg.sec: group "
        "join excluded)",
    )
