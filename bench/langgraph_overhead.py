"""What recording a LangGraph graph with RunfoldCallback costs the graph.

    python bench/langgraph_overhead.py                      # in-memory sink only
    python bench/langgraph_overhead.py --kafka              # + a local broker, started here
    python bench/langgraph_overhead.py --bootstrap 127.0.0.1:9092

A 10-node linear graph (each node writes two state keys) is invoked ``--invocations``
times per variant, the variants interleaved over ``--rounds`` rounds. Reported per
variant: the best round's wall time per invocation (the least disturbed by other work
on a shared machine), the median round's, and the best round's CPU time of the thread
that runs the graph (what the integration costs the graph itself, without the broker
and librdkafka's threads competing for the same cores), each with its ratio to the
bare graph:

- ``bare``: ``graph.invoke`` with no callbacks;
- ``noop-callback``: a LangChain handler that does nothing, i.e. what LangChain's
  callback machinery costs any tracer (LangSmith, Langfuse, this one);
- ``runfold/list``: :class:`RunfoldCallback` over a ``ListSink`` (the mapping alone);
- ``runfold/kafka``: over an :class:`EventProducer` to a real broker (encode + queue;
  delivery is asynchronous, flushed outside the clock).

Each variant runs twice: nodes that return at once (the worst case: the graph is all
overhead) and nodes that wait ``--node-ms`` (a node that calls a model or a service).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402

from producers import EventProducer, ListSink, RunRecorder  # noqa: E402
from producers.integrations.langgraph import RunfoldCallback  # noqa: E402

NODES = 10


class State(TypedDict):
    count: int
    last: str


def build_graph(node_seconds: float) -> Any:
    """``n0 -> n1 -> ... -> n9``; each node waits ``node_seconds`` and updates two keys."""

    def node(name: str) -> Callable[[State], dict[str, Any]]:
        def run(state: State) -> dict[str, Any]:
            if node_seconds:
                time.sleep(node_seconds)
            return {"count": state["count"] + 1, "last": name}

        return run

    builder = StateGraph(State)
    names = [f"n{i}" for i in range(NODES)]
    for name in names:
        builder.add_node(name, node(name))
    builder.add_edge(START, names[0])
    for first, second in zip(names, names[1:], strict=False):
        builder.add_edge(first, second)
    builder.add_edge(names[-1], END)
    return builder.compile()


class NoopHandler(BaseCallbackHandler):
    """Receives every callback and does nothing."""

    run_inline = True


def time_invocations(graph: Any, config: dict[str, Any], invocations: int
                     ) -> tuple[float, float]:
    """(wall, this thread's CPU) seconds per invocation over ``invocations`` calls.

    A sync ``invoke`` of a graph with one node per step runs its nodes, and so the
    callbacks, on the calling thread.
    """
    started, cpu = time.perf_counter(), time.thread_time()
    for _ in range(invocations):
        graph.invoke({"count": 0, "last": ""}, config)
    return ((time.perf_counter() - started) / invocations,
            (time.thread_time() - cpu) / invocations)


def measure(graph: Any, variants: dict[str, dict[str, Any]], invocations: int,
            rounds: int) -> dict[str, tuple[float, float, float]]:
    """(best wall, median wall, best thread CPU) seconds per invocation of each variant,
    the variants interleaved."""
    for config in variants.values():  # warm-up: imports, caches, the producer's connection
        time_invocations(graph, config, max(1, invocations // 10))
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, config in variants.items():
            samples[name].append(time_invocations(graph, config, invocations))
    return {
        name: (min(w for w, _ in values), statistics.median(w for w, _ in values),
               min(c for _, c in values))
        for name, values in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--node-ms", type=float, default=1.0,
                        help="what a working node waits (second table)")
    parser.add_argument("--kafka", action="store_true", help="start a local broker too")
    parser.add_argument("--bootstrap", help="use this broker for the runfold/kafka variant")
    args = parser.parse_args()

    broker: Any = None
    bootstrap = args.bootstrap
    if args.kafka and not bootstrap:
        from bench.kafka_env import BenchBroker

        broker = BenchBroker(None, echo=print).__enter__()
        bootstrap = broker.bootstrap
    try:
        for node_seconds in (0.0, args.node_ms / 1000):
            graph = build_graph(node_seconds)
            recorders: list[RunRecorder] = [RunRecorder(ListSink())]
            variants: dict[str, dict[str, Any]] = {
                "bare": {},
                "noop-callback": {"callbacks": [NoopHandler()]},
                "runfold/list": {"callbacks": [RunfoldCallback(graph, recorders[0])]},
            }
            if bootstrap:
                from confluent_kafka.admin import AdminClient

                from bench.kafka_env import create_topic

                topic = create_topic(AdminClient({"bootstrap.servers": bootstrap}),
                                     f"bench-langgraph-{uuid.uuid4().hex[:8]}", 1)
                producer = EventProducer(topic, bootstrap_servers=bootstrap)
                producer.connect()
                recorders.append(RunRecorder(producer))
                variants["runfold/kafka"] = {
                    "callbacks": [RunfoldCallback(graph, recorders[1])]}
            results = measure(graph, variants, args.invocations, args.rounds)
            best_bare, median_bare, cpu_bare = results["bare"]
            label = "nodes return at once" if not node_seconds else \
                f"nodes wait {args.node_ms:g} ms"
            print(f"\n10-node graph, {label} ({args.invocations} invocations x "
                  f"{args.rounds} rounds)")
            print(f"  {'variant':<15} {'best ms':>9} {'vs bare':>8} {'median ms':>10} "
                  f"{'vs bare':>8} {'CPU ms':>8} {'vs bare':>8} {'+CPU us/node':>13}")
            for name, (best, median, cpu) in results.items():
                print(f"  {name:<15} {best * 1000:>9.3f} {best / best_bare:>7.3f}x "
                      f"{median * 1000:>10.3f} {median / median_bare:>7.3f}x "
                      f"{cpu * 1000:>8.3f} {cpu / cpu_bare:>7.3f}x "
                      f"{(cpu - cpu_bare) / NODES * 1e6:>+13.1f}")
            for recorder in recorders[1:]:
                print(f"  producer: {recorder.close(timeout=30).summary()}")
    finally:
        if broker is not None:
            broker.__exit__(None, None, None)


if __name__ == "__main__":
    main()
