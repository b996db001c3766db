"""``runfold serve`` under load: reads from a large view, ingestion over HTTP, the view's tail.

    python bench/serve_bench.py                               # 1M runs, local broker
    python bench/serve_bench.py --runs 100000 --bootstrap 127.0.0.1:9092

Prints four numbers (goals of issue 16 in brackets):

- ``GET /v1/runs/{id}``: p50/p99 latency with ``--runs`` runs in the view [p99 <= 10 ms];
- ``GET /v1/runs?<filter>``: p50/p99 of a first page (50) under a random filter
  (status, agent, violation kind, or a time range) [p99 <= 50 ms];
- ingestion: events/s posted as NDJSON batches by ``--clients`` concurrent clients, each
  answer given after Kafka acknowledged every event of it [>= 20k events/s];
- the view's tail: events/s a fresh view reads the events topic just written.

The view is filled by writing synthetic rows straight into SQLite (what the tailer would
write: a real folded run's document, under other ids, statuses, agents and violation
kinds): folding 1M runs through Kafka first would take longer than the benchmark itself
and measure the fold, not the view. Latencies are measured from a client in this process
over keep-alive HTTP to the server (uvicorn, one process), so they include HTTP.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.kafka_env import BenchBroker  # noqa: E402
from clients import RunfoldSettings, TopicNames  # noqa: E402
from producers import ListSink, RunRecorder  # noqa: E402
from runfold.topics import ensure_topics  # noqa: E402
from schemas import NodeEntered, NodeExited, ToolCalled, ToolReturned  # noqa: E402
from serve import ServeSettings, start_in_thread  # noqa: E402
from serve.app import view_source  # noqa: E402
from serve.store import RunRow, ViewBatch, kind_mask, open_view  # noqa: E402
from serve.tailer import ViewTailer  # noqa: E402

STATUSES = ("COMPLETED",) * 80 + ("FAILED",) * 10 + ("CANCELLED",) * 5 + ("RUNNING",) * 5
KINDS = ("gap", "conflict", "after_terminal", "missing_start")
AGENTS = [f"{i:064x}" for i in range(50)]
START_NS = 1_767_225_600_000_000_000


def recorded_runs(runs: int, nodes: int) -> list[list[str]]:
    """``runs`` complete runs as the recorder writes them, each as serde JSON lines."""
    result = []
    for _ in range(runs):
        sink = ListSink()
        with RunRecorder(sink).run(AGENTS[0], "0" * 40, {"task": "bench"}) as run:
            for n in range(nodes):
                run.emit(NodeEntered(node_id=f"node-{n}", iteration=1), payload={"tokens": n})
                run.emit(ToolCalled(tool_name="search"))
                run.emit(ToolReturned(tool_name="search"))
                run.emit(NodeExited(node_id=f"node-{n}", next_node=None, duration_ms=3))
            run.complete(outputs={"answer": 1})
        result.append([event.to_json() for event in sink.events])
    return result


def fill_view(
    path: Path, source: str, runs: int, template: dict[str, Any]
) -> tuple[float, list[str]]:
    """Write ``runs`` synthetic runs into the view at ``path``; seconds it took, and ids of
    runs from all over the file (every 250th)."""
    rng = random.Random(16)
    writer = open_view(path, source)
    started = time.monotonic()
    batch_size = 50_000
    now_ms = int(time.time() * 1000)
    sample: list[str] = []
    for first in range(0, runs, batch_size):
        batch = ViewBatch()
        for i in range(first, min(runs, first + batch_size)):
            run_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            if i % 250 == 0:
                sample.append(run_id)
            status = rng.choice(STATUSES)
            kinds = [k for k in KINDS if rng.random() < 0.03]
            doc = dict(template)
            doc["run"] = {**template["run"], "run_id": run_id, "status": status}
            batch.runs[run_id] = RunRow(
                run_id=run_id, status=status, agent_spec_digest=rng.choice(AGENTS),
                started_ns=START_NS + i * 1_000_000, finished_ns=None,
                events_applied=rng.randrange(5, 200), violation_mask=kind_mask(kinds),
                violations=len(kinds), updated_ms=now_ms, stalled_ns=None,
                doc=json.dumps(doc, separators=(",", ":")),
            )
        writer.apply(batch)
    writer.close()
    return time.monotonic() - started, sample


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms " \
           f"({len(ordered)} requests)"


def timed_gets(client: httpx.Client, paths: list[str]) -> list[float]:
    samples = []
    for path in paths:
        started = time.perf_counter()
        answer = client.get(path)
        samples.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise SystemExit(f"GET {path}: {answer.status_code} {answer.text[:200]}")
    return samples


def random_filters(rng: random.Random, count: int) -> list[str]:
    paths = []
    for _ in range(count):
        choice = rng.randrange(4)
        if choice == 0:
            query = f"status={rng.choice(['FAILED', 'CANCELLED', 'RUNNING', 'COMPLETED'])}"
        elif choice == 1:
            query = f"agent={rng.choice(AGENTS)}"
        elif choice == 2:
            query = f"violation={rng.choice(KINDS)}"
        else:
            query = "started_after=2026-01-01T00:05:00Z&started_before=2026-01-01T00:06:00Z"
        paths.append(f"/v1/runs?{query}&limit=50")
    return paths


def post_batches(url: str, batches: list[bytes], clients: int) -> tuple[int, list[str]]:
    """Post every batch from ``clients`` threads; events acknowledged, and failures."""
    lock = threading.Lock()
    queue = list(reversed(batches))
    acknowledged = [0]
    failures: list[str] = []

    def post() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                answer = client.post("/v1/events", content=body,
                                     headers={"content-type": "application/x-ndjson"})
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text[:200]}")
                    return
                with lock:
                    acknowledged[0] += answer.json()["accepted"]

    threads = [threading.Thread(target=post) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return acknowledged[0], failures


def ingest(url: str, batches: list[bytes], clients: int) -> tuple[float, int, float]:
    """Post every batch from another process (so that this one's CPU time is the server's):
    seconds taken, events acknowledged, and this process's CPU seconds meanwhile."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        pool.submit(post_batches, url, [], 1).result()  # the child is up and imported
        cpu = time.process_time()
        started = time.monotonic()
        acknowledged, failures = pool.submit(post_batches, url, batches, clients).result()
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu
    if failures:
        raise SystemExit(f"ingestion failed: {failures[0]}")
    return elapsed, acknowledged, cpu


def tail_rate(kafka: RunfoldSettings, events: int, data_dir: Path) -> tuple[float, float]:
    """Events/s a fresh view reads from the events topic (to its end), and CPU s/event."""
    names = kafka.topic_names
    writer = open_view(data_dir / "tail.sqlite", "tail")
    tailer = ViewTailer(
        {**kafka.client_config(), "log_level": 2}, writer, runs_topic=names.runs,
        violations_topic=names.violations, events_topic=names.events, retention_s=86400 * 365,
    )
    started = time.monotonic()
    cpu = time.process_time()
    tailer.start()
    while tailer.records < events:
        if time.monotonic() - started > 600:
            raise SystemExit(f"the view read only {tailer.records} of {events} events in 600 s")
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    tailer.stop()
    writer.close()
    return events / elapsed, cpu / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs in the view")
    parser.add_argument("--requests", type=int, default=2_000, help="GETs per measurement")
    parser.add_argument("--ingest-runs", type=int, default=2_000, help="runs posted")
    parser.add_argument("--batch", type=int, default=1_000, help="events per NDJSON request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent posting clients")
    parser.add_argument("--bootstrap", default=None, help="Kafka to use (default: start one)")
    options = parser.parse_args()
    rng = random.Random(7)

    with BenchBroker(options.bootstrap, echo=print) as broker, \
            tempfile.TemporaryDirectory(prefix="runfold-serve-bench-") as tmp:
        prefix = f"bench-serve-{uuid.uuid4().hex[:6]}-"
        names = TopicNames().prefixed(prefix)
        ensure_topics(broker.admin(), names, partitions=3, replication=1)
        kafka = RunfoldSettings(bootstrap_servers=broker.bootstrap, topic_prefix=prefix)
        data_dir = Path(tmp)
        settings = ServeSettings(data_dir=data_dir, port=0)

        print(f"recording {options.ingest_runs} runs for ingestion ...")
        runs = recorded_runs(options.ingest_runs, nodes=12)
        template = {"run": json.loads(runs[0][0]), "last_seq": 50, "source_offset": 1,
                    "pending": [], "counters": {"events_applied": 50}, "violation_counts": {},
                    "violations": []}
        print(f"filling the view with {options.runs:,} synthetic runs ...")
        fill_s, ids = fill_view(settings.view_path, view_source(kafka), options.runs, template)
        size = settings.view_path.stat().st_size
        print(f"  {fill_s:.0f} s, {size / 1e6:.0f} MB")

        handle = start_in_thread(settings, kafka, port=0)
        try:
            with httpx.Client(base_url=handle.url, timeout=30) as client:
                timed_gets(client, [f"/v1/runs/{i}" for i in ids[:200]])  # warm up
                one = timed_gets(client, [f"/v1/runs/{rng.choice(ids)}"
                                          for _ in range(options.requests)])
                listed = timed_gets(client, random_filters(rng, options.requests // 2))
                fleet = timed_gets(client, ["/v1/fleet"])  # counts over every run: cached 1 s
            print(f"GET /v1/runs/{{id}} with {options.runs:,} runs: {percentiles(one)}")
            print(f"GET /v1/runs?<filter> (first page of 50): {percentiles(listed)}")
            print(f"GET /v1/fleet (uncached, counts over {options.runs:,} runs): "
                  f"{fleet[0] * 1000:.0f} ms")

            lines = [line for run in runs for line in run]
            batches = [("\n".join(lines[i:i + options.batch]) + "\n").encode()
                       for i in range(0, len(lines), options.batch)]
            post_batches(handle.url, batches[:4], 1)  # the producer is connected and warm
            seconds, acknowledged, cpu = ingest(handle.url, batches[4:], options.clients)
            print(f"ingestion: {acknowledged:,} events in {seconds:.1f} s = "
                  f"{acknowledged / seconds:,.0f} events/s acknowledged "
                  f"({options.batch} per request, {options.clients} clients in another "
                  f"process); server CPU {cpu / acknowledged * 1e6:.0f} us/event "
                  f"(the view tailing them included)")
        finally:
            handle.stop()
        rate, cpu = tail_rate(kafka, len(lines), data_dir)
        print(f"view tail: {len(lines):,} events read into a fresh view at {rate:,.0f} "
              f"events/s, CPU {cpu * 1e6:.0f} us/event")
        print(f"machine load average while measuring: {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores")
        broker.admin().delete_topics(names.all(), operation_timeout=10)


if __name__ == "__main__":
    main()
