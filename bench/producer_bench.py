"""Producer throughput: the simulator alone, and producing to a real broker.

    python -m bench.producer_bench                        # simulator + encode only
    python -m bench.producer_bench --bootstrap 127.0.0.1:9092 --runs 5000
    python -m bench.producer_bench --bootstrap ... --matrix   # compression x linger

Four numbers, each in events (records) per second, best of ``--repeat``:

- ``simulate+encode``: ``Fleet.records()`` with the Avro codec, no Kafka;
- ``produce``: pre-generated records through :class:`producers.EventProducer`
  (``produce()`` + final ``flush()``, i.e. until every record is acknowledged);
- ``end-to-end``: ``produce_fleet`` (simulate, encode and produce together), the
  path ``runfold produce`` takes;
- ``RunRecorder``: the same runs recorded through ``RunRecorder.run``/``emit`` over an
  ``EventProducer`` (kind models and payloads built beforehand), the path an agent takes.

``--matrix`` repeats ``produce`` over compression (none, lz4, zstd) and linger.ms,
which chose runfold's defaults (producers/kafka.py).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from producers import EventProducer, FaultRates, Fleet, FleetConfig, RunRecorder, produce_fleet
from producers.runs import RunPlan, agent_profiles, plan_run


def simulate(runs: int, agents: int, seed: int) -> tuple[float, list[tuple[bytes, bytes]]]:
    """Seconds to generate and encode the fleet, and its records."""
    fleet = Fleet(FleetConfig(runs=runs, agents=agents, seed=seed, faults=FaultRates()))
    started = time.perf_counter()
    records = [(key, value) for key, value, _ in fleet.records()]
    return time.perf_counter() - started, records


def recorded_runs(config: FleetConfig) -> list[tuple[RunPlan, list[tuple[Any, Any]]]]:
    """The fleet's runs as an agent would record them: plan and ``(kind, payload)`` per seq."""
    agents = agent_profiles(config.seed, config.agents)
    runs = []
    for index in range(config.runs):
        plan = plan_run(config.seed, index, agents[index % config.agents], config.faults,
                        fail_rate=config.fail_rate, cancel_rate=config.cancel_rate,
                        interrupt_rate=config.interrupt_rate)
        runs.append((plan, plan.steps))
    return runs


def record_runs(recorder: RunRecorder, runs: list[tuple[RunPlan, list[tuple[Any, Any]]]]) -> int:
    """Each run through ``recorder.run(...)``/``emit`` as an agent does; returns events sent."""
    sent = 0
    for plan, steps in runs:
        agent = plan.agent
        with recorder.run(agent.agent_spec_digest, agent.git_sha, plan.inputs,
                          graph_name=agent.graph_name, entry_point=agent.nodes[0],
                          run_id=plan.run_id) as run:
            emit = run.emit
            for kind, payload in steps[1:-1]:
                emit(kind, payload)
            last_kind, last_payload = steps[-1]
            if last_kind is None:  # graph_completed: written by the recorder on leaving
                run.complete(plan.outputs, plan.final_state_digest)
            else:
                emit(last_kind, last_payload)
        sent += run.seq
    return sent


def new_topic(admin: AdminClient, partitions: int) -> str:
    name = f"bench-producer-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[
        name
    ].result(timeout=30)
    return name


@dataclass
class ProduceRun:
    """One produce measurement."""

    seconds: float
    cpu_seconds: float
    tx_bytes: int


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]],
            config: dict[str, Any]) -> ProduceRun:
    """Produce ``records`` until every one is acknowledged: wall time, CPU time, bytes sent.

    CPU time is the whole process's (librdkafka's threads included): on a shared
    machine it is steadier than wall time. Bytes sent come from librdkafka's
    statistics (``tx_bytes``), so they show what compression saves on the wire.
    """
    stats: list[int] = [0]

    def on_stats(text: str) -> None:
        stats[0] = int(json.loads(text).get("tx_bytes", 0))

    conf = {**config, "stats_cb": on_stats, "statistics.interval.ms": 100}
    producer = EventProducer(topic, bootstrap_servers=bootstrap, config=conf)
    producer.connect()
    started, cpu = time.perf_counter(), time.process_time()
    for key, value in records:
        producer.produce(key, value)
    report = producer.flush(timeout=120)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    time.sleep(0.25)  # one more statistics interval, so tx_bytes includes the last batches
    producer.poll(0.1)
    producer.close(timeout=5)
    if not report.ok:
        raise SystemExit(f"not every record was delivered: {report.summary()}")
    return ProduceRun(seconds, cpu_seconds, stats[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--matrix", action="store_true")
    args = parser.parse_args()

    best_sim = best_cpu = float("inf")
    records: list[tuple[bytes, bytes]] = []
    for _ in range(args.repeat):
        cpu = time.process_time()
        seconds, records = simulate(args.runs, args.agents, args.seed)
        best_sim = min(best_sim, seconds)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    size = sum(len(v) for _, v in records) / len(records)
    print(f"records: {len(records):,} from {args.runs:,} runs, {size:.0f} value bytes on average")
    print(f"simulate+encode: {len(records) / best_sim:,.0f} events/s "
          f"({best_cpu / len(records) * 1e6:.1f} CPU us/event)")
    if not args.bootstrap:
        return

    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    configs: list[dict[str, Any]] = [{}]
    if args.matrix:
        configs = [{"compression.type": c, "linger.ms": linger}
                   for c in ("none", "lz4", "zstd") for linger in (5, 20, 100)]
    for config in configs:
        runs = []
        for _ in range(args.repeat):
            topic = new_topic(admin, args.partitions)
            runs.append(produce(args.bootstrap, topic, records, config))
            admin.delete_topics([topic])
        wall = min(r.seconds for r in runs)
        cpu = min(r.cpu_seconds for r in runs)
        sent = min(r.tx_bytes for r in runs)
        label = ", ".join(f"{k}={v}" for k, v in config.items()) or "runfold defaults"
        print(f"produce ({label}): {len(records) / wall:,.0f} events/s, "
              f"{cpu / len(records) * 1e6:.1f} CPU us/event, "
              f"{sent / len(records):.1f} bytes sent/event")

    topic = new_topic(admin, args.partitions)
    fleet = Fleet(FleetConfig(runs=args.runs, agents=args.agents, seed=args.seed + 1))
    producer = EventProducer(topic, bootstrap_servers=args.bootstrap)
    producer.connect()
    result = produce_fleet(fleet, producer)
    admin.delete_topics([topic])
    print(f"end-to-end (simulate+encode+produce): {result.records_per_second:,.0f} events/s "
          f"({result.report.summary()})")

    recorded_plans = recorded_runs(
        FleetConfig(runs=args.runs, agents=args.agents, seed=args.seed + 2))
    topic = new_topic(admin, args.partitions)
    producer = EventProducer(topic, bootstrap_servers=args.bootstrap)
    producer.connect()
    started, cpu = time.perf_counter(), time.process_time()
    recorded = record_runs(RunRecorder(producer), recorded_plans)
    report = producer.close(timeout=120)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    admin.delete_topics([topic])
    print(f"RunRecorder (run/emit + send, flush included): {recorded / seconds:,.0f} events/s, "
          f"{cpu_seconds / recorded * 1e6:.1f} CPU us/event ({report.summary()})")


if __name__ == "__main__":
    main()
