"""Fault scenarios on one broker: consumers and producers killed, stopped, churned; state lost.

Each scenario writes one row of ``docs/reliability.md`` (see ``harness.write_row``).
Scale: ``RELIABILITY_EVENTS`` (scenario 1, default 1,000,000), ``RELIABILITY_KILLS``
(default 20), ``RELIABILITY_RUNS`` (runs of the other scenarios, default 4,000, ~35
events each).
"""

from __future__ import annotations

import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]
from harness import (
    Proc,
    committed_total,
    consume_proc,
    delivered,
    make_topics,
    metrics_url,
    produce_proc,
    read_events,
    read_output,
    scale,
    stats_of,
    wait_until,
)
from truth import (
    Row,
    Truth,
    fleet_config,
    fleet_truth,
    measure,
    summary,
    write_row,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 3
FAULTS = "gap=0.01,dup=0.02,conflict=0.01,after_end=0.01,corrupt=0.01,reorder=0.02"


def _drain(bootstrap: str, topics: Any, tmp: Path, group: str, name: str = "drain") -> Proc:
    """A last consumer that runs until the topic is idle and exits cleanly."""
    proc = consume_proc(
        bootstrap,
        topics,
        tmp,
        name,
        "--group",
        group,
        "--instance-id",
        "drain",
        "--until-idle",
        "8",
    ).start()
    assert proc.wait(timeout=1800) == 0, proc.stderr_text()[-3000:]
    return proc


def _result(conf: dict[str, Any], topics: Any, truth: Truth, **kwargs: Any) -> tuple[Any, Any]:
    on_topic = read_events(conf, topics.events, PARTITIONS)
    folded = read_output(conf, topics, PARTITIONS)
    return measure(truth, on_topic, folded, **kwargs), on_topic


def test_1_consumer_kill_9_twenty_times_during_a_million_events(
    kafka_bootstrap: str, kafka_admin: AdminClient, tmp_path: Path
) -> None:
    events, kills = scale("EVENTS", 1_000_000), scale("KILLS", 20)
    conf = {"bootstrap.servers": kafka_bootstrap}
    topics = make_topics(kafka_admin, partitions=PARTITIONS)
    config = fleet_config(runs=max(1, events // 35), seed=101, faults=FAULTS)
    truth = fleet_truth(config)
    group = f"rel1-{uuid.uuid4().hex[:6]}"
    producer = produce_proc(kafka_bootstrap, topics, tmp_path, "produce", config).start()
    rng = random.Random(1)
    total = len(truth.sent)
    recoveries: list[float] = []
    consumer = consume_proc(kafka_bootstrap, topics, tmp_path, "consume-0", "--group", group)
    consumer.start()
    for kill in range(1, kills + 1):
        # Spread the kills over the stream: kill k lands after k/(kills+1) of it is committed.
        target = total * kill // (kills + 1)
        wait_until(
            lambda t=target: committed_total(conf, topics.events, group, PARTITIONS) >= t,
            900,
            f"committed offsets to reach {target} before kill {kill}",
            interval=0.5,
        )
        time.sleep(rng.uniform(0, 1.5))  # mid-transaction, most likely
        consumer.kill9()
        at_kill = committed_total(conf, topics.events, group, PARTITIONS)
        consumer = consume_proc(
            kafka_bootstrap, topics, tmp_path, f"consume-{kill}", "--group", group
        ).start()
        restarted = time.monotonic()
        wait_until(
            lambda a=at_kill: (
                committed_total(conf, topics.events, group, PARTITIONS) > a
                or committed_total(conf, topics.events, group, PARTITIONS) >= total
            ),
            600,
            f"progress after kill {kill}",
            interval=0.25,
        )
        recoveries.append(time.monotonic() - restarted)
    assert producer.wait(timeout=1800) == 0, producer.stderr_text()[-2000:]
    consumer.stop()
    _drain(kafka_bootstrap, topics, tmp_path, group)

    result, _ = _result(conf, topics, truth)
    write_row(
        Row(
            scenario="1. consumer kill -9",
            injected=f"kill -9 of the folding consumer {kills}x, spread over the stream (EOS)",
            events=truth.events,
            lost=result.lost,
            duplicated=result.duplicated,
            order_violations=result.order_violations,
            state_equals_truth=result.state_equals_truth,
            recovery_s=max(recoveries) if recoveries else None,
            details={
                "kills": kills,
                "records": total,
                "recovery_median_s": sorted(recoveries)[len(recoveries) // 2]
                if recoveries
                else None,
                "recovery": "restart until committed offsets move past the kill point",
            },
        )
    )
    assert (result.lost, result.duplicated, result.order_violations) == (0, 0, 0), summary(result)
    assert result.state_equals_truth, summary(result)


def test_4_producer_kill_9_mid_run(
    kafka_bootstrap: str, kafka_admin: AdminClient, tmp_path: Path
) -> None:
    runs = scale("RUNS", 4000)
    conf = {"bootstrap.servers": kafka_bootstrap}
    topics = make_topics(kafka_admin, partitions=PARTITIONS)
    config = fleet_config(runs=runs, seed=404)
    truth = fleet_truth(config)
    total = len(truth.sent)
    rate = max(2000, total // 20)
    producer = produce_proc(
        kafka_bootstrap, topics, tmp_path, "produce", config, "--rate", str(rate)
    ).start()
    url = metrics_url(producer)
    acked: list[float] = [0.0]

    def half_acked() -> bool:
        acked[0] = delivered(url) or acked[0]
        return acked[0] >= total / 2

    wait_until(half_acked, 600, "half of the fleet acknowledged", interval=0.1)
    producer.kill9()
    killed_at = time.monotonic()
    _drain(kafka_bootstrap, topics, tmp_path, f"rel4-{uuid.uuid4().hex[:6]}")

    result, on_topic = _result(conf, topics, truth, must_be_present=lambda r, s: False)
    acked_lost = max(0, int(acked[0]) - on_topic.records)
    write_row(
        Row(
            scenario="4. producer kill -9",
            injected="kill -9 of `runfold produce` once half its records were acknowledged",
            events=truth.events,
            lost=acked_lost,
            duplicated=result.duplicated,
            order_violations=result.order_violations,
            state_equals_truth=result.state_equals_truth,
            recovery_s=None,
            details={
                "acked_before_kill": int(acked[0]),
                "on_topic": on_topic.records,
                "sent_total": total,
                "runs_cut_short": result.partial_runs,
                "state": "complete runs == manifest; cut runs == the prefix on the topic",
                "drain_s": round(time.monotonic() - killed_at, 1),
            },
        )
    )
    assert acked_lost == 0 and on_topic.records < total
    assert result.duplicated == 0 and result.order_violations == 0, summary(result)
    assert result.state_equals_truth, summary(result)


def test_5_consumer_sigstop_then_sigcont_commits_nothing_stale(
    kafka_bootstrap: str, kafka_admin: AdminClient, tmp_path: Path
) -> None:
    runs = scale("RUNS", 4000)
    conf = {"bootstrap.servers": kafka_bootstrap}
    topics = make_topics(kafka_admin, partitions=PARTITIONS)
    config = fleet_config(runs=runs, seed=505, faults=FAULTS)
    truth = fleet_truth(config)
    total = len(truth.sent)
    group = f"rel5-{uuid.uuid4().hex[:6]}"
    producer = produce_proc(kafka_bootstrap, topics, tmp_path, "produce", config).start()
    assert producer.wait(timeout=900) == 0, producer.stderr_text()[-2000:]
    args = ("--group", group, "--session-timeout-ms", "6000", "--batch-size", "500")
    stopped = consume_proc(
        kafka_bootstrap, topics, tmp_path, "stopped", *args, "--instance-id", "a"
    ).start()
    wait_until(
        lambda: committed_total(conf, topics.events, group, PARTITIONS) >= total // 5,
        600,
        "a fifth committed",
        interval=0.1,
    )
    stopped.signal(signal.SIGSTOP)
    at_stop = committed_total(conf, topics.events, group, PARTITIONS)
    paused = time.monotonic()
    other = consume_proc(
        kafka_bootstrap,
        topics,
        tmp_path,
        "other",
        *args,
        "--instance-id",
        "b",
        "--until-idle",
        "10",
    ).start()
    wait_until(
        lambda: committed_total(conf, topics.events, group, PARTITIONS) > at_stop,
        300,
        "the other instance to take over",
        interval=0.25,
    )
    recovery = time.monotonic() - paused  # from the stop to the other instance's commit
    time.sleep(max(0.0, 20 - (time.monotonic() - paused)))  # well past session/poll limits
    stopped.signal(signal.SIGCONT)
    other_status = other.wait(timeout=1800)
    stopped.stop()
    _drain(kafka_bootstrap, topics, tmp_path, group)

    result, _ = _result(conf, topics, truth)
    log = stopped.stderr_text()
    outcome = (
        "fenced"
        if "fenced" in log
        else "lost its partitions, aborted"
        if "lost" in log or "abort" in log
        else "rejoined"
    )
    write_row(
        Row(
            scenario="5. consumer SIGSTOP/SIGCONT",
            injected="SIGSTOP of a folding consumer mid-transaction for 20 s (session 6 s), "
            "another instance takes over, then SIGCONT",
            events=truth.events,
            lost=result.lost,
            duplicated=result.duplicated,
            order_violations=result.order_violations,
            state_equals_truth=result.state_equals_truth,
            recovery_s=round(recovery, 2),
            details={
                "stopped_instance": outcome,
                "stopped_stats": stats_of(stopped),
                "other_exit": other_status,
                "recovery": "SIGSTOP until the other instance commits",
            },
        )
    )
    assert (result.lost, result.duplicated, result.order_violations) == (0, 0, 0), summary(result)
    assert result.state_equals_truth, summary(result)


def test_6_consumers_join_and_leave_during_a_stream(
    kafka_bootstrap: str, kafka_admin: AdminClient, tmp_path: Path
) -> None:
    runs = scale("RUNS", 4000)
    conf = {"bootstrap.servers": kafka_bootstrap}
    topics = make_topics(kafka_admin, partitions=PARTITIONS)
    config = fleet_config(runs=runs, seed=606, faults=FAULTS)
    truth = fleet_truth(config)
    group = f"rel6-{uuid.uuid4().hex[:6]}"
    total = len(truth.sent)
    producer = produce_proc(
        kafka_bootstrap, topics, tmp_path, "produce", config, "--rate", str(max(1000, total // 60))
    ).start()
    rng = random.Random(6)
    live: dict[str, Proc] = {}
    joins = leaves = 0
    serial = 0
    while producer.alive():
        if len(live) < 1 or (len(live) < 3 and rng.random() < 0.6):
            serial += 1
            name = f"c{serial}"
            live[name] = consume_proc(
                kafka_bootstrap,
                topics,
                tmp_path,
                name,
                "--group",
                group,
                "--instance-id",
                name,
                "--session-timeout-ms",
                "6000",
            ).start()
            joins += 1
        else:
            name = rng.choice(sorted(live))
            live.pop(name).stop()  # SIGTERM: commits its transaction, leaves
            leaves += 1
        time.sleep(rng.uniform(2, 5))
    assert producer.wait(timeout=60) == 0, producer.stderr_text()[-2000:]
    for proc in live.values():
        proc.stop()
    _drain(kafka_bootstrap, topics, tmp_path, group)

    result, _ = _result(conf, topics, truth)
    write_row(
        Row(
            scenario="6. consumer churn",
            injected=f"consumers joining ({joins}) and leaving ({leaves}) every 2-5 s, 1-3 live",
            events=truth.events,
            lost=result.lost,
            duplicated=result.duplicated,
            order_violations=result.order_violations,
            state_equals_truth=result.state_equals_truth,
            recovery_s=None,
            details={"joins": joins, "leaves": leaves, "records": total},
        )
    )
    assert (result.lost, result.duplicated, result.order_violations) == (0, 0, 0), summary(result)
    assert result.state_equals_truth, summary(result)


def test_7_state_topic_partition_deleted_is_rebuilt_from_events(
    kafka_bootstrap: str, kafka_admin: AdminClient, tmp_path: Path
) -> None:
    runs = scale("RUNS", 4000)
    conf = {"bootstrap.servers": kafka_bootstrap}
    topics = make_topics(kafka_admin, partitions=PARTITIONS)
    first, second = fleet_config(runs=runs, seed=707), fleet_config(runs=runs // 4, seed=708)
    group = f"rel7-{uuid.uuid4().hex[:6]}"
    loaded = produce_proc(kafka_bootstrap, topics, tmp_path, "p0", first).start()
    assert loaded.wait(timeout=900) == 0, loaded.stderr_text()[-2000:]
    _drain(kafka_bootstrap, topics, tmp_path, group, "before")
    # The changelog (what restore reads) is compacted, and Kafka refuses DeleteRecords on a
    # compact-only topic:
    # allow deletion for the moment, delete partition 0's records, restore the policy.
    _set_policy(kafka_admin, topics.changelog, "compact,delete")
    high = _high_watermark(conf, topics.changelog, 0)
    futures = kafka_admin.delete_records([TopicPartition(topics.changelog, 0, high)])
    for future in futures.values():
        future.result(timeout=60)
    _set_policy(kafka_admin, topics.changelog, "compact")
    assert (
        produce_proc(kafka_bootstrap, topics, tmp_path, "p1", second).start().wait(timeout=900) == 0
    )
    started = time.monotonic()
    after = _drain(kafka_bootstrap, topics, tmp_path, group, "after")
    took = time.monotonic() - started

    truth = _merge(fleet_truth(first), fleet_truth(second))
    result, _ = _result(conf, topics, truth)
    rebuilt = "rebuilding its runs" in after.stderr_text()
    write_row(
        Row(
            scenario="7. state partition deleted",
            injected=f"all records of {topics.changelog.split('-', 2)[-1]} partition 0 deleted "
            "(DeleteRecords), then more events and a restart",
            events=truth.events,
            lost=result.lost,
            duplicated=result.duplicated,
            order_violations=result.order_violations,
            state_equals_truth=result.state_equals_truth,
            recovery_s=round(took, 2),
            details={
                "rebuilt_from_events_logged": rebuilt,
                "recovery": "restart, restore + rebuild + fold the new events, until idle",
            },
        )
    )
    assert rebuilt, after.stderr_text()[-2000:]
    assert result.state_equals_truth, summary(result)
    assert (result.lost, result.duplicated) == (0, 0), summary(result)


def _set_policy(admin: AdminClient, topic: str, policy: str) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry

    resource = ConfigResource(
        "topic",
        topic,
        incremental_configs=[
            ConfigEntry("cleanup.policy", policy, incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=60)


def _high_watermark(conf: dict[str, Any], topic: str, partition: int) -> int:
    from confluent_kafka import Consumer

    consumer = Consumer({**conf, "group.id": "rel-watermarks"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), 30)[1])
    finally:
        consumer.close()


def _merge(a: Truth, b: Truth) -> Truth:
    manifest = dict(a.manifest)
    manifest["runs"] = a.manifest["runs"] + b.manifest["runs"]
    totals = dict(a.manifest["totals"])
    for key, value in b.manifest["totals"].items():
        totals[key] = totals.get(key, 0) + value
    manifest["totals"] = totals
    return Truth(manifest, a.sent + b.sent)
