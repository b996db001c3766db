"""Fault scenarios on a 3-node cluster (RF 3, min.insync.replicas 2), brokers killed under load.

The cluster is ``LocalKafka(...).up(nodes=3)`` in a temporary home; its nodes are killed
with SIGKILL and restarted with their own command lines (:class:`cluster.Cluster`).
``runfold produce`` (acks=all, idempotent) and ``runfold consume`` run throughout; the
consumer is supervised like a service manager would (restarted if it exits), and the
restarts are reported; it must not need that: a failover is recovered in the process
(``consumer_exits: []``, ``consumer_recoveries`` counts the client rebuilds).
Scale: ``RELIABILITY_CLUSTER_RUNS`` (default 6,000 runs, ~35 events each).
"""

from __future__ import annotations

import atexit
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster import Cluster, in_sync, leader_of
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from harness import (
    Proc,
    consume_proc,
    delivered,
    make_topics,
    metrics_url,
    produce_proc,
    read_events,
    read_output,
    scale,
    wait_until,
)
from truth import Row, fleet_config, fleet_truth, measure, summary, write_row

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh 3-node KRaft cluster for this module."""
    from runfold.kafka.local import LocalKafka

    home = tmp_path_factory.mktemp("cluster-home")
    local = LocalKafka(home)
    atexit.register(local.down, timeout=10.0)
    try:
        bootstrap = local.up(nodes=3, port=0, tie_to_parent=True, ready_timeout=600.0)
        yield Cluster(home, bootstrap)
    finally:
        local.down(timeout=20.0)


class Supervised:
    """A ``runfold consume`` kept running: restarted whenever it exits, restarts counted."""

    def __init__(self, make: Any) -> None:
        self._make = make
        self.restarts = 0
        self.exits: list[int] = []
        self.proc: Proc = make(0).start()

    def check(self) -> None:
        if not self.proc.alive():
            assert self.proc.popen is not None
            self.exits.append(self.proc.popen.returncode)
            self.restarts += 1
            self.proc = self._make(self.restarts).start()

    def stop(self) -> None:
        """Stop the running consumer; one that already exited is counted (not restarted),
        and so is one that does not end with status 0 on SIGTERM (or needed kill -9)."""
        assert self.proc.popen is not None
        if not self.proc.alive():
            self.exits.append(self.proc.popen.returncode)
            return
        self.proc.stop()
        if self.proc.popen.returncode != 0:
            self.exits.append(self.proc.popen.returncode)

    def recoveries(self) -> int:
        """In-process client rebuilds (``recoveries`` of each consumer's final stats)."""
        total = 0
        for path in self.proc.log_dir.glob("consume-*.out"):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    total += int(json.loads(line).get("recoveries", 0))
        return total

    def recovery_logs(self) -> int:
        """``recovered:`` lines logged (also by a consumer killed before its final stats)."""
        logs = [p.read_text(errors="replace") for p in self.proc.log_dir.glob("consume-*.err")]
        return sum(text.count("runfold.consume: recovered:") for text in logs)

    def fatal_but_alive(self) -> int:
        """Times a consumer logged a fatal client error and went on (it then folds nothing)."""
        logs = [p.read_text(errors="replace") for p in self.proc.log_dir.glob("consume-*.err")]
        return sum(text.count("consumer error (will retry): Fatal error") for text in logs)


def _delivery_line(producer: Proc) -> dict[str, int]:
    """produced/delivered/failed/indeterminate/pending from ``runfold produce``'s output."""
    for line in producer.stdout_text().splitlines():
        if line.startswith("delivery:"):
            fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
            return {k: int(v) for k, v in fields.items() if v.isdigit()}
    return {}


def _setup(cluster: Cluster, tmp_path: Path, seed: int, rate_seconds: int) -> Any:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    topics = make_topics(admin, partitions=PARTITIONS, replication=3)
    config = fleet_config(runs=scale("CLUSTER_RUNS", 6000), seed=seed)
    truth = fleet_truth(config)
    total = len(truth.sent)
    group = f"relc-{uuid.uuid4().hex[:6]}"
    producer = produce_proc(
        cluster.bootstrap,
        topics,
        tmp_path,
        "produce",
        config,
        "--rate",
        str(max(500, total // rate_seconds)),
    ).start()
    consumer = Supervised(
        lambda n: consume_proc(
            cluster.bootstrap, topics, tmp_path, f"consume-{n}", "--group", group
        )
    )
    return admin, topics, truth, total, group, producer, consumer


def _finish(
    cluster: Cluster, tmp_path: Path, topics: Any, group: str, producer: Proc, consumer: Supervised
) -> dict[str, int]:
    status = producer.wait(timeout=1800)
    report = _delivery_line(producer)
    assert report, f"produce exited {status}: {producer.stderr_text()[-2000:]}"
    consumer.stop()
    drain = consume_proc(
        cluster.bootstrap, topics, tmp_path, "drain", "--group", group, "--until-idle", "10"
    ).start()
    assert drain.wait(timeout=1800) == 0, drain.stderr_text()[-3000:]
    return report


def _wait_in_sync(admin: AdminClient, topic: str) -> None:
    wait_until(
        lambda: _safe(lambda: in_sync(admin, topic, range(PARTITIONS), 3)),
        600,
        f"all replicas of {topic} back in sync",
        interval=1.0,
    )


def _safe(check: Any) -> bool:
    """``check()``, or False while the cluster cannot answer (brokers come and go).

    Only Kafka's own errors mean "not yet"; anything else is a bug in the check and fails.
    """
    try:
        return bool(check())
    except KafkaException:
        return False


def test_2_partition_leader_kill_9_five_times_during_production(
    cluster: Cluster, tmp_path: Path
) -> None:
    admin, topics, truth, total, group, producer, consumer = _setup(cluster, tmp_path, 202, 120)
    url = metrics_url(producer)
    kills, recoveries, killed = 5, [], []
    for k in range(1, kills + 1):
        target = total * k / (kills + 2)
        wait_until(
            lambda t=target: (delivered(url) or 0) >= t or not producer.alive(),
            1200,
            f"{target:.0f} acks before kill {k}",
            interval=0.2,
        )
        consumer.check()
        leader = leader_of(admin, topics.events, 0)
        at_kill = delivered(url) or 0
        cluster.signal(leader, signal.SIGKILL)
        killed.append(leader)
        start = time.monotonic()
        if producer.alive():
            wait_until(
                lambda a=at_kill: (delivered(url) or 0) > a + 100 or not producer.alive(),
                600,
                f"acks again after kill {k}",
                interval=0.1,
            )
            recoveries.append(time.monotonic() - start)
        time.sleep(2)
        cluster.restart(leader)
        _wait_in_sync(admin, topics.events)
        consumer.check()
    report = _finish(cluster, tmp_path, topics, group, producer, consumer)

    conf = {"bootstrap.servers": cluster.bootstrap}
    result = measure(
        truth,
        read_events(conf, topics.events, PARTITIONS),
        read_output(conf, topics, PARTITIONS),
        tails_only=False,
    )
    not_acked = report.get("produced", total) - report.get("delivered", 0)
    write_row(
        Row(
            scenario="2. leader kill -9 (3 brokers)",
            injected=f"kill -9 of partition 0's leader {kills}x during production "
            f"(nodes {killed}), acks=all, RF 3, min.insync 2",
            events=truth.events,
            lost=max(0, result.lost - not_acked),
            duplicated=result.duplicated,
            order_violations=result.order_violations,
            state_equals_truth=result.state_equals_truth,
            recovery_s=round(max(recoveries), 2) if recoveries else None,
            details={
                "delivery": report,
                "consumer_restarts": consumer.restarts,
                "consumer_exits": consumer.exits,
                "consumer_recoveries": consumer.recoveries(),
                "consumer_recovered_logged": consumer.recovery_logs(),
                "consumer_fatal_but_alive": consumer.fatal_but_alive(),
                "written_twice_by_producer": result.topic_duplicates,
                "runs_with_unacked_events": result.partial_runs,
                "recovery": "kill until the producer gets acks again (max of the kills)",
                "recoveries_s": [round(r, 2) for r in recoveries],
            },
        )
    )
    assert consumer.exits == [], f"the consumer exited {consumer.exits} (it must recover)"
    assert result.lost - not_acked <= 0, summary(result)
    assert (result.duplicated, result.order_violations) == (0, 0), summary(result)
    if not_acked == 0:
        assert result.state_equals_truth, summary(result)


def test_3_two_of_three_brokers_down_no_acks_then_nothing_acked_lost(
    cluster: Cluster, tmp_path: Path
) -> None:
    admin, topics, truth, total, group, producer, consumer = _setup(cluster, tmp_path, 303, 90)
    url = metrics_url(producer)
    wait_until(lambda: (delivered(url) or 0) >= total / 4, 1200, "a quarter acked", interval=0.2)
    down = [2, 3]
    for node in down:
        cluster.signal(node, signal.SIGKILL)
    time.sleep(3)  # acks already granted before the kill may still be reported
    before = delivered(url) or 0
    time.sleep(20)
    during = (delivered(url) or 0) - before
    healed = time.monotonic()
    for node in down:
        cluster.restart(node)
    wait_until(
        lambda: (delivered(url) or 0) > before or not producer.alive(),
        900,
        "acks after the outage",
        interval=0.2,
    )
    recovery = time.monotonic() - healed
    _wait_in_sync(admin, topics.events)
    consumer.check()
    report = _finish(cluster, tmp_path, topics, group, producer, consumer)

    conf = {"bootstrap.servers": cluster.bootstrap}
    result = measure(
        truth,
        read_events(conf, topics.events, PARTITIONS),
        read_output(conf, topics, PARTITIONS),
        tails_only=False,
    )
    not_acked = report.get("produced", total) - report.get("delivered", 0)
    write_row(
        Row(
            scenario="3. 2 of 3 brokers down",
            injected="kill -9 of nodes 2 and 3 (quorum and ISR lost) for 20 s during production, "
            "then restart",
            events=truth.events,
            lost=max(0, result.lost - not_acked),
            duplicated=result.duplicated,
            order_violations=result.order_violations,
            state_equals_truth=result.state_equals_truth,
            recovery_s=round(recovery, 2),
            details={
                "acks_during_outage": during,
                "delivery": report,
                "consumer_restarts": consumer.restarts,
                "consumer_exits": consumer.exits,
                "consumer_recoveries": consumer.recoveries(),
                "consumer_recovered_logged": consumer.recovery_logs(),
                "consumer_fatal_but_alive": consumer.fatal_but_alive(),
                "written_twice_by_producer": result.topic_duplicates,
                "runs_with_unacked_events": result.partial_runs,
                "recovery": "restart of the nodes until the producer gets acks again",
            },
        )
    )
    assert during == 0, f"{during} acks while 2 of 3 brokers were down"
    assert consumer.exits == [], f"the consumer exited {consumer.exits} (it must recover)"
    assert result.lost - not_acked <= 0, summary(result)
    assert result.duplicated == 0, summary(result)
    if not_acked == 0:
        assert result.order_violations == 0 and result.state_equals_truth, summary(result)
