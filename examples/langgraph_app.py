"""A LangGraph support agent recorded by runfold: no LLM, one interrupt, one resume.

    make install && .venv/bin/python examples/langgraph_app.py

Five pure-Python nodes handle a refund ticket: ``triage`` (a conditional edge),
``lookup_order`` (fails once, retried by its ``RetryPolicy``), ``compute_refund``
(calls a tool), ``approve`` (pauses on ``interrupt()`` for a human) and ``reply``.
The script plays the human: it answers the interrupt with ``Command(resume=...)`` on
the same thread, so the two invocations are ONE runfold run.

The broker is found as ``runfold demo`` finds it: ``KAFKA_BOOTSTRAP_SERVERS`` /
``RUNFOLD_BOOTSTRAP_SERVERS`` / ``RUNFOLD_CONFIG`` when set, else the local broker
``runfold kafka up`` started, else a local broker is started for the script's
lifetime (``--keep`` leaves it running; ``make kafka-down`` stops it). The run's
events are read back from the events topic and folded with ``consumers.fold()``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Annotated, Any, TypedDict

from confluent_kafka import Consumer, KafkaException, TopicPartition
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph, add_messages
from langgraph.types import Command, RetryPolicy, interrupt

from clients.settings import RunfoldSettings
from consumers import COUNTER_NAMES, fold
from producers import EventProducer, RunRecorder
from producers.integrations.langgraph import RunfoldCallback
from schemas import Event
from schemas.codec import EventCodec

# --- the agent ---------------------------------------------------------------------------


class Ticket(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    category: str
    order: dict[str, Any]
    refund: int
    decision: str


@tool
def refund_amount(order_total: int, days_late: int) -> int:
    """Refund for a late order: 10% per day late, at most the order's total."""
    return min(order_total, order_total * days_late // 10)


def triage(ticket: Ticket) -> dict[str, Any]:
    text = ticket["messages"][-1].content
    return {"category": "refund" if "refund" in str(text).lower() else "other"}


class LookupOrder:
    """The order service drops the first call; the node's RetryPolicy retries it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, ticket: Ticket) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("order service reset the connection")
        return {"order": {"id": "A-1042", "total": 180, "days_late": 4}}


def compute_refund(ticket: Ticket) -> dict[str, Any]:
    order = ticket["order"]
    amount = refund_amount.invoke({"order_total": order["total"],
                                   "days_late": order["days_late"]})
    return {"refund": amount}


def approve(ticket: Ticket) -> dict[str, Any]:
    decision = interrupt({"question": f"Refund {ticket['refund']} EUR on order "
                                      f"{ticket['order']['id']}?"})
    return {"decision": str(decision)}


def reply(ticket: Ticket) -> dict[str, Any]:
    if ticket["category"] != "refund":
        text = "A colleague will get back to you."
    elif ticket["decision"] == "approved":
        text = f"We refunded {ticket['refund']} EUR. Sorry for the delay!"
    else:
        text = "We could not approve a refund this time."
    return {"messages": [AIMessage(text)]}


def build_agent() -> Any:
    builder = StateGraph(Ticket)
    builder.add_node("triage", triage)
    builder.add_node("lookup_order", LookupOrder(),
                     retry_policy=RetryPolicy(initial_interval=0.2, jitter=False))
    builder.add_node("compute_refund", compute_refund)
    builder.add_node("approve", approve)
    builder.add_node("reply", reply)
    builder.add_edge(START, "triage")
    builder.add_conditional_edges(
        "triage", lambda t: "lookup_order" if t["category"] == "refund" else "reply",
        ["lookup_order", "reply"])
    builder.add_edge("lookup_order", "compute_refund")
    builder.add_edge("compute_refund", "approve")
    builder.add_edge("approve", "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=InMemorySaver(), name="refund-desk")


# --- Kafka: find or start the broker, read the run back ----------------------------------


def kafka_settings(keep: bool) -> RunfoldSettings:
    """The settings ``runfold demo`` would use, starting the local broker if none runs."""
    configured = ("KAFKA_BOOTSTRAP_SERVERS", "RUNFOLD_BOOTSTRAP_SERVERS", "RUNFOLD_CONFIG")
    if any(os.environ.get(name) for name in configured):
        return RunfoldSettings.load()
    from clients.cluster_state import default_home
    from runfold.kafka.local import LocalKafka

    local = LocalKafka(default_home())
    if local.is_running() and local.bootstrap:
        return RunfoldSettings.load(bootstrap_servers=local.bootstrap)
    print(f"starting a local Kafka broker (data in {local.root}) ...")
    bootstrap = local.up(nodes=1, echo=print, tie_to_parent=not keep)
    return RunfoldSettings.load(bootstrap_servers=bootstrap)


def end_offsets(settings: RunfoldSettings, topic: str, timeout: float = 60.0
                ) -> list[TopicPartition]:
    """Where ``topic``'s partitions end now: this run's events come after.

    Waits (until ``timeout``) for each partition's leader: a topic just created, or a
    broker just started, answers "not leader" for a few seconds.
    """
    consumer = Consumer(settings.consumer_config("langgraph-example-offsets"))
    deadline = time.monotonic() + timeout
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = []
        for partition in partitions:
            while True:
                try:
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                             timeout=10)
                    break
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            ends.append(TopicPartition(topic, partition, high))
        return ends
    finally:
        consumer.close()


def read_run(settings: RunfoldSettings, start: list[TopicPartition], run_id: str,
             expected: int, timeout: float = 30.0) -> list[Event]:
    """The events of ``run_id`` written after ``start``, polling until ``expected`` arrived."""
    decode = EventCodec().decode
    consumer = Consumer(settings.consumer_config(
        "langgraph-example", {"enable.auto.commit": False, "auto.offset.reset": "earliest"}))
    events: list[Event] = []
    try:
        consumer.assign(start)
        deadline = time.monotonic() + timeout
        while len(events) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is None and msg.key() == run_id.encode():
                    events.append(decode(msg.value()))
    finally:
        consumer.close()
    return events


# --- the story ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true",
                        help="leave a broker this script starts running")
    args = parser.parse_args()

    from runfold.topics import ensure_topics

    settings = kafka_settings(args.keep)
    topic = settings.topic_names.events
    ensure_topics(settings.admin_config(), settings.topic_names)
    start = end_offsets(settings, topic)

    agent = build_agent()
    # What a LangGraph app adds (README, "Use it from LangGraph"); the recorder is given
    # here only because this script found its broker itself (the default reads RUNFOLD_*).
    tracer = RunfoldCallback(agent, RunRecorder(EventProducer(topic, settings=settings)))
    config = {"callbacks": [tracer], "configurable": {"thread_id": "ticket-1042"}}

    ticket = {"messages": [HumanMessage("My order A-1042 is 4 days late, I want a refund.")]}
    paused = agent.invoke(ticket, config)
    question = paused["__interrupt__"][0].value["question"]
    print(f"the agent asks a human: {question!r} -> 'approved'")
    done = agent.invoke(Command(resume="approved"), config)
    print(f"the agent replies: {done['messages'][-1].content!r}")

    report = tracer.close()
    print(f"producer: {report.summary()}")
    assert tracer.last_run_id is not None, "the callback started no run"
    run_id = str(tracer.last_run_id)
    events = read_run(settings, start, run_id, report.produced)
    print(f"\nrun {run_id}: {len(events)} events read back from {topic}")
    for event in events:
        fields = {k: v for k, v in event.kind.model_dump().items() if k != "type"}
        if event.kind.type == "graph_started":  # the identity rides in the payload
            fields = {k: event.payload[k] for k in ("graph_name", "entry_point", "git_sha")}
        print(f"  {event.seq:>3} {event.kind.type:<19} "
              + " ".join(f"{k}={v}" for k, v in fields.items()))

    state = fold(events).runs[tracer.last_run_id]
    print(f"\nfolded: status={state.status.value} agent_spec_digest="
          f"{state.agent_spec_digest[:12]}... final_state_digest="
          f"{(state.final_state_digest or '')[:12]}...")
    print("  " + " ".join(f"{name}={getattr(state, name)}" for name in COUNTER_NAMES
                          if getattr(state, name)))
    print(f"  violations={sum(state.violation_counts.values())}")


if __name__ == "__main__":
    main()
