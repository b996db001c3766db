"""RunfoldCallback on real LangGraph graphs (no model calls): the events it emits, and the
``Run`` the fold makes of them after a trip through the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import operator
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph", reason="LangGraph is the optional extra runfold[langgraph]")

from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, StateGraph, add_messages  # noqa: E402
from langgraph.types import Command, RetryPolicy, interrupt  # noqa: E402

from consumers import COUNTER_NAMES, RunState, fold  # noqa: E402
from consumers.next_event import COUNTED_KINDS  # noqa: E402
from consumers.service.lane import decoder  # noqa: E402
from producers import EventProducer, ListSink, RunRecorder  # noqa: E402
from producers.integrations.langgraph import RunfoldCallback  # noqa: E402
from producers.integrations.langgraph_graph import graph_structure  # noqa: E402
from producers.integrations.values import spec_digest, state_digest  # noqa: E402
from schemas import Event, RunStatus, serde  # noqa: E402
from schemas.codec import EventCodec  # noqa: E402

GIT_SHA = "0123456789abcdef0123456789abcdef01234567"


# --- graphs (pure Python nodes, no model) ----------------------------------------------


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    total: int
    trail: Annotated[list[str], operator.add]


@tool
def add_tax(amount: int) -> int:
    """Add 20% tax to an amount."""
    return amount * 6 // 5


@tool
def lookup(key: str) -> str:
    """Look a key up; fails for unknown keys."""
    if key != "known":
        raise KeyError(key)
    return "value"


class Flaky:
    """A node that raises ConnectionError (retried by default) its first ``failures`` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, state: State) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"upstream down (call {self.calls})")
        return {"trail": ["fetch"]}


def plan(state: State) -> dict[str, Any]:
    return {"trail": ["plan"], "total": 100}


def price(state: State) -> dict[str, Any]:
    return {"total": add_tax.invoke({"amount": state["total"]}), "trail": ["price"]}


def approve(state: State) -> dict[str, Any]:
    decision = interrupt({"question": f"approve {state['total']}?"})
    return {"trail": [f"approved:{decision}"]}


def answer(state: State) -> dict[str, Any]:
    return {"messages": [AIMessage(f"total is {state['total']}")], "trail": ["answer"]}


def support_graph(*, fetch_failures: int = 1, checkpointer: Any = None,
                  with_approval: bool = True) -> Any:
    """plan -> fetch (retried) -> price (a tool) -> [approve (interrupt)] -> answer."""
    builder = StateGraph(State)
    builder.add_node("plan", plan)
    builder.add_node("fetch", Flaky(fetch_failures),
                     retry_policy=RetryPolicy(initial_interval=0.01, jitter=False))
    builder.add_node("price", price)
    builder.add_node("answer", answer)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "fetch")
    builder.add_edge("fetch", "price")
    if with_approval:
        builder.add_node("approve", approve)
        builder.add_edge("price", "approve")
        builder.add_edge("approve", "answer")
    else:
        builder.add_edge("price", "answer")
    builder.add_edge("answer", END)
    return builder.compile(checkpointer=checkpointer)


BRANCHES = ("b1", "b2", "b3", "b4", "b5")


def parallel_graph(*, failing: str | None = None, asynchronous: bool = False,
                   finished: list[str] | None = None) -> Any:
    """start -> five branches at once (each sleeps and calls a tool) -> join.

    Each branch that returns appends its name to ``finished``.
    """
    done = [] if finished is None else finished

    def branch(name: str) -> Callable[..., Any]:
        def run(state: State) -> dict[str, Any]:
            time.sleep(0.02)
            if name == failing:
                raise ValueError(f"{name} broke")
            update = {"trail": [name], "total": add_tax.invoke({"amount": 10})}
            done.append(name)
            return update

        async def arun(state: State) -> dict[str, Any]:
            await asyncio.sleep(0.02)
            return {"trail": [name], "total": await add_tax.ainvoke({"amount": 10})}

        return arun if asynchronous else run

    class Fan(TypedDict):
        trail: Annotated[list[str], operator.add]
        total: Annotated[int, operator.add]

    builder = StateGraph(Fan)
    builder.add_node("start", lambda s: {"trail": ["start"]})
    builder.add_node("join", lambda s: {"trail": ["join"]})
    builder.add_edge(START, "start")
    for name in BRANCHES:
        builder.add_node(name, branch(name))
        builder.add_edge("start", name)
        builder.add_edge(name, "join")
    builder.add_edge("join", END)
    return builder.compile()


def recorded(graph: Any, **options: Any) -> tuple[ListSink, RunfoldCallback]:
    sink = ListSink()
    return sink, RunfoldCallback(graph, RunRecorder(sink), git_sha=GIT_SHA, **options)


def config(callback: RunfoldCallback, thread_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"callbacks": [callback]}
    if thread_id is not None:
        conf["configurable"] = {"thread_id": thread_id}
    return conf


def kinds(events: list[Event]) -> list[str]:
    return [event.kind.type for event in events]


def counters(state: RunState) -> dict[str, int]:
    return {name: getattr(state, name) for name in COUNTER_NAMES if getattr(state, name)}


def only_run(events: list[Event]) -> RunState:
    result = fold(events)
    assert len(result.runs) == 1, f"expected one run, got {list(result.runs)}"
    state = next(iter(result.runs.values()))
    assert not any(state.violation_counts.values()), state.recent_violations
    return state


def assert_contiguous(events: list[Event]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


# --- the mapping, event by event (in memory) -----------------------------------------------


@pytest.mark.unit
def test_a_graph_run_maps_onto_runfold_events_in_order() -> None:
    graph = support_graph(with_approval=False)
    sink, callback = recorded(graph)
    inputs = {"messages": [HumanMessage("what do I owe?")], "total": 0, "trail": []}
    result = graph.invoke(inputs, config(callback))

    events = sink.events
    assert kinds(events) == [
        "graph_started", "message_added",
        "node_entered", "state_updated", "node_exited",                      # plan
        "node_entered", "node_retrying", "node_entered", "state_updated",   # fetch, retried
        "node_exited",
        "node_entered", "tool_called", "tool_returned", "state_updated",    # price
        "node_exited",
        "node_entered", "state_updated", "message_added", "node_exited",    # answer
        "graph_completed",
    ]
    assert_contiguous(events)
    started = events[0].payload
    assert started == {
        "agent_spec_digest": spec_digest(graph_structure(graph)),
        "git_sha": GIT_SHA,
        "inputs": {"messages": [{"type": "human", "content": "what do I owe?"}], "total": 0,
                   "trail": []},
        "graph_name": "LangGraph",
        "entry_point": "plan",
    }
    by_kind = {e.kind.type: e for e in reversed(events)}  # the first of each kind
    assert by_kind["message_added"].kind.role == "user"
    assert by_kind["message_added"].kind.content_length == len("what do I owe?")
    assert events[17].kind.role == "assistant"
    assert events[3].kind.keys_changed == ("trail", "total")
    exits = [e.kind for e in events if e.kind.type == "node_exited"]
    assert [(k.node_id, k.next_node) for k in exits] == [
        ("plan", "fetch"), ("fetch", "price"), ("price", "answer"), ("answer", None)]
    retry = by_kind["node_retrying"]
    assert (retry.kind.node_id, retry.kind.attempt) == ("fetch", 1)
    assert retry.kind.delay_ms >= 10  # the policy's 0.01 s, measured
    assert retry.payload == {"error": "ConnectionError: upstream down (call 1)"}
    assert by_kind["tool_called"].kind.tool_name == "add_tax"
    assert by_kind["tool_called"].payload == {"node_id": "price"}
    entered = by_kind["node_entered"]
    assert entered.payload["langgraph_run_id"] and entered.payload["step"] == 1
    completed = events[-1]
    assert completed.kind.iterations == 5  # node_entered events, the retried attempt included
    assert completed.payload == {"outputs": {**result, "messages": [
        {"type": m.type, "content": m.content} for m in result["messages"]]},
        "final_state_digest": state_digest(result)}
    assert callback.last_run_id == events[0].run_id


@pytest.mark.unit
def test_spec_digest_follows_the_graph_structure_not_the_process() -> None:
    first, second = support_graph(), support_graph()
    assert spec_digest(graph_structure(first)) == spec_digest(graph_structure(second))
    assert spec_digest(graph_structure(first)) != spec_digest(
        graph_structure(support_graph(with_approval=False)))


@pytest.mark.unit
def test_retries_exhausted_end_in_node_failed_then_graph_failed() -> None:
    graph = support_graph(fetch_failures=5, with_approval=False)  # the policy allows 3 attempts
    sink, callback = recorded(graph)
    with pytest.raises(ConnectionError):
        graph.invoke({"messages": [], "total": 0, "trail": []}, config(callback))
    events = sink.events
    assert kinds(events)[-7:] == ["node_entered", "node_retrying", "node_entered",
                                  "node_retrying", "node_entered", "node_failed",
                                  "graph_failed"]
    retrying = [e.kind.attempt for e in events if e.kind.type == "node_retrying"]
    assert retrying == [1, 2]
    failed = [e for e in events if e.kind.type == "node_failed"]
    assert [(e.kind.node_id, e.payload["attempts"]) for e in failed] == [("fetch", 3)]
    assert events[-1].kind.type == "graph_failed"
    assert events[-1].kind.error == "ConnectionError: upstream down (call 3)"
    state = only_run(events)
    assert state.status is RunStatus.FAILED
    assert (state.retries, state.node_failures) == (2, 1)


@pytest.mark.unit
def test_a_tool_that_raises_is_tool_failed_and_the_node_goes_on() -> None:
    def ask(state: State) -> dict[str, Any]:
        with contextlib.suppress(KeyError):
            lookup.invoke({"key": "missing"})
        return {"trail": [lookup.invoke({"key": "known"})]}

    builder = StateGraph(State)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    graph = builder.compile()
    sink, callback = recorded(graph)
    graph.invoke({"messages": [], "total": 0, "trail": []}, config(callback))
    tools = [(e.kind.type, e.kind.tool_name) for e in sink.events if "tool" in e.kind.type]
    assert tools == [("tool_called", "lookup"), ("tool_failed", "lookup"),
                     ("tool_called", "lookup"), ("tool_returned", "lookup")]
    failed = next(e for e in sink.events if e.kind.type == "tool_failed")
    assert failed.payload == {"node_id": "ask", "error": "KeyError: 'missing'"}
    state = only_run(sink.events)
    assert (state.status, state.tool_calls, state.tool_failures) == (RunStatus.COMPLETED, 2, 1)


def tool_node_graph() -> Any:
    """A scripted model asks for two tools at once (``call-1`` returns, ``call-2`` raises);
    LangGraph's prebuilt ``ToolNode`` runs them, then the model answers."""
    from langgraph.prebuilt import ToolNode, tools_condition

    def model(state: State) -> dict[str, Any]:
        if any(m.type == "tool" for m in state["messages"]):
            return {"messages": [AIMessage("done")]}
        calls = [{"name": "add_tax", "args": {"amount": 50}, "id": "call-1"},
                 {"name": "lookup", "args": {"key": "nope"}, "id": "call-2"}]
        return {"messages": [AIMessage("", tool_calls=calls)]}

    builder = StateGraph(State)
    builder.add_node("model", model)
    builder.add_node("tools", ToolNode([add_tax, lookup], handle_tool_errors=True))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition)
    builder.add_edge("tools", "model")
    return builder.compile()


@pytest.mark.unit
def test_a_prebuilt_tool_node_records_each_tool_call_and_its_messages() -> None:
    graph = tool_node_graph()
    sink, callback = recorded(graph)
    graph.invoke({"messages": [HumanMessage("go")], "total": 0, "trail": []}, config(callback))
    tools = sorted((e.kind.type, e.kind.tool_name, e.payload.get("tool_call_id"))
                   for e in sink.events if "tool_" in e.kind.type)
    assert tools == [("tool_called", "add_tax", "call-1"), ("tool_called", "lookup", "call-2"),
                     ("tool_failed", "lookup", "call-2"), ("tool_returned", "add_tax", "call-1")]
    roles = [e.kind.role for e in sink.events if e.kind.type == "message_added"]
    assert roles == ["user", "assistant", "tool", "tool", "assistant"]
    state = only_run(sink.events)
    assert (state.status, state.tool_calls, state.tool_returns, state.tool_failures,
            state.messages) == (RunStatus.COMPLETED, 2, 1, 1, 5)


@pytest.mark.unit
def test_subgraph_nodes_are_named_by_their_path() -> None:
    class Inner(TypedDict):
        total: int

    inner = StateGraph(Inner)
    inner.add_node("double", lambda s: {"total": s["total"] * 2})
    inner.add_edge(START, "double")
    outer = StateGraph(Inner)
    outer.add_node("first", lambda s: {"total": 1})
    outer.add_node("sub", inner.compile())
    outer.add_edge(START, "first")
    outer.add_edge("first", "sub")
    graph = outer.compile()
    sink, callback = recorded(graph)
    graph.invoke({"total": 0}, config(callback))
    entered = [e.kind.node_id for e in sink.events if e.kind.type == "node_entered"]
    assert entered == ["first", "sub", "sub/double"]
    assert only_run(sink.events).status is RunStatus.COMPLETED


@pytest.mark.unit
def test_interrupt_keeps_the_run_open_and_the_resume_continues_it() -> None:
    graph = support_graph(checkpointer=InMemorySaver())
    sink, callback = recorded(graph)
    inputs = {"messages": [], "total": 0, "trail": []}
    paused = graph.invoke(inputs, config(callback, "thread-1"))
    assert "__interrupt__" in paused
    run_id = callback.paused_run("thread-1")
    assert run_id == sink.events[0].run_id
    interrupted = [e for e in sink.events if e.kind.type == "graph_interrupted"]
    assert [(e.kind.reason, e.kind.node_id) for e in interrupted] == [("interrupt", "approve")]
    assert interrupted[0].payload["interrupts"][0]["value"] == {"question": "approve 120?"}
    assert only_run(sink.events).status is RunStatus.RUNNING
    before = len(sink.events)

    done = graph.invoke(Command(resume="yes"), config(callback, "thread-1"))
    assert done["trail"][-2:] == ["approved:yes", "answer"]
    assert callback.paused_run("thread-1") is None
    resumed = sink.events[before:]
    assert {e.run_id for e in sink.events} == {run_id}
    assert resumed[0].kind.type == "checkpoint_restored"
    assert resumed[0].kind.checkpoint_id == interrupted[0].payload["checkpoint_id"]
    assert resumed[0].kind.node_id == "approve"
    assert_contiguous(sink.events)
    state = only_run(sink.events)
    assert state.status is RunStatus.COMPLETED
    saved = [e.kind.checkpoint_id for e in sink.events if e.kind.type == "checkpoint_saved"]
    history = [c.config["configurable"]["checkpoint_id"]
               for c in graph.checkpointer.list({"configurable": {"thread_id": "thread-1"}})]
    assert saved == history[::-1]  # every checkpoint LangGraph wrote, oldest first, once

    # The thread's next invocation is a new run that reports only its own checkpoints.
    graph.invoke({"messages": [], "total": 0, "trail": []}, config(callback, "thread-1"))
    second = [e for e in sink.events if e.run_id != run_id]
    assert second[0].kind.type == "graph_started"
    assert {e.kind.checkpoint_id for e in second if e.kind.type == "checkpoint_saved"}.isdisjoint(
        saved)


@pytest.mark.unit
def test_a_graph_called_from_an_untraced_graph_pauses_and_resumes_as_one_run() -> None:
    class Value(TypedDict):
        total: int

    inner = StateGraph(Value)
    inner.add_node("ask", lambda s: {"total": interrupt("how much?")})
    inner.add_edge(START, "ask")
    child = inner.compile()
    sink, callback = recorded(child)
    outer = StateGraph(Value)  # the caller's graph, not recorded: only the child gets the callback
    outer.add_node("delegate", lambda s: child.invoke(s, {"callbacks": [callback]}))
    outer.add_edge(START, "delegate")
    parent = outer.compile(checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "outer-1"}}

    parent.invoke({"total": 0}, thread)
    assert kinds(sink.events)[-1] == "graph_interrupted"  # raised through the child's root
    assert sink.events[-1].payload["interrupts"][0]["value"] == "how much?"
    assert parent.invoke(Command(resume=7), thread) == {"total": 7}
    assert_contiguous(sink.events)
    state = only_run(sink.events)
    assert (state.status, state.interrupts, state.checkpoints_restored) == (
        RunStatus.COMPLETED, 1, 1)


@pytest.mark.unit
def test_interrupt_and_resume_under_ainvoke_are_one_run() -> None:
    graph = support_graph(checkpointer=InMemorySaver())
    sink, callback = recorded(graph)

    async def pause_then_resume() -> dict[str, Any]:
        await graph.ainvoke({"messages": [], "total": 0, "trail": []}, config(callback, "a"))
        result: dict[str, Any] = await graph.ainvoke(Command(resume="ok"), config(callback, "a"))
        return result

    assert asyncio.run(pause_then_resume())["trail"][-1] == "answer"
    assert_contiguous(sink.events)
    state = only_run(sink.events)
    assert (state.status, state.interrupts, state.checkpoints_restored, state.retries) == (
        RunStatus.COMPLETED, 1, 1, 1)
    assert state.checkpoints_saved == len(list(graph.checkpointer.list(
        {"configurable": {"thread_id": "a"}})))


@pytest.mark.unit
def test_a_static_breakpoint_pauses_the_run_until_the_thread_goes_on() -> None:
    builder = StateGraph(State)
    builder.add_node("plan", plan)
    builder.add_node("answer", answer)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "answer")
    graph = builder.compile(checkpointer=InMemorySaver(), interrupt_before=["answer"])
    sink, callback = recorded(graph)
    graph.invoke({"messages": [], "total": 0, "trail": []}, config(callback, "bp"))
    paused = [e.kind for e in sink.events if e.kind.type == "graph_interrupted"]
    assert [(k.reason, k.node_id) for k in paused] == [("interrupt_before", "answer")]
    assert callback.paused_run("bp") == sink.events[0].run_id
    graph.invoke(None, config(callback, "bp"))  # go on from the breakpoint
    restored = [e.kind for e in sink.events if e.kind.type == "checkpoint_restored"]
    assert [k.node_id for k in restored] == ["answer"]
    assert_contiguous(sink.events)
    state = only_run(sink.events)
    assert (state.status, state.nodes_exited, state.interrupts) == (RunStatus.COMPLETED, 2, 1)


@pytest.mark.unit
def test_a_paused_run_nobody_resumes_can_be_cancelled() -> None:
    graph = support_graph(checkpointer=InMemorySaver())
    sink, callback = recorded(graph)
    graph.invoke({"messages": [], "total": 0, "trail": []}, config(callback, "t"))
    assert callback.cancel("t", reason="reviewer left") is True
    assert callback.cancel("t") is False
    assert sink.events[-1].kind.type == "graph_interrupted"
    assert sink.events[-1].kind.reason == "cancelled"
    assert only_run(sink.events).status is RunStatus.CANCELLED


@pytest.mark.unit
def test_closing_or_dropping_the_callback_cancels_its_paused_runs() -> None:
    import gc

    graph = support_graph(checkpointer=InMemorySaver())
    sink, callback = recorded(graph)
    graph.invoke({"messages": [], "total": 0, "trail": []}, config(callback, "c1"))
    callback.close()
    assert callback.paused_run("c1") is None
    closed = sink.events[-1]
    assert (closed.kind.type, closed.kind.reason) == ("graph_interrupted", "cancelled")
    assert closed.payload == {"detail": "the runfold callback was closed while the run was paused"}

    sink, callback = recorded(graph)  # dropped without close(): cancelled, never "failed"
    graph.invoke({"messages": [], "total": 0, "trail": []}, config(callback, "c2"))
    del callback
    gc.collect()
    assert (sink.events[-1].kind.type, sink.events[-1].kind.reason) == (
        "graph_interrupted", "cancelled")
    assert only_run(sink.events).status is RunStatus.CANCELLED


@pytest.mark.unit
def test_parallel_branches_keep_seq_contiguous_and_one_run() -> None:
    graph = parallel_graph()
    sink, callback = recorded(graph)
    graph.invoke({"trail": [], "total": 0}, config(callback))
    assert_contiguous(sink.events)
    state = only_run(sink.events)
    assert state.status is RunStatus.COMPLETED
    assert counters(state) == {
        "events_applied": len(sink.events), "nodes_entered": 7, "nodes_exited": 7,
        "tool_calls": 5,
        "tool_returns": 5, "state_updates": 7}


@pytest.mark.unit
def test_async_parallel_branches_keep_seq_contiguous() -> None:
    graph = parallel_graph(asynchronous=True)
    sink, callback = recorded(graph)
    asyncio.run(graph.ainvoke({"trail": [], "total": 0}, config(callback)))
    assert_contiguous(sink.events)
    state = only_run(sink.events)
    assert (state.status, state.nodes_exited, state.tool_returns) == (RunStatus.COMPLETED, 7, 5)


@pytest.mark.unit
def test_concurrent_invocations_are_separate_runs() -> None:
    graph = parallel_graph()
    sink, callback = recorded(graph)
    threads = [threading.Thread(target=graph.invoke,
                                args=({"trail": [], "total": 0}, config(callback)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    by_run: dict[uuid.UUID, list[Event]] = {}
    for event in sink.events:
        by_run.setdefault(event.run_id, []).append(event)
    assert len(by_run) == 4
    assert not callback._spans
    for events in by_run.values():
        assert_contiguous(events)
    assert {s.status for s in fold(sink.events).runs.values()} == {RunStatus.COMPLETED}


@pytest.mark.unit
def test_a_failing_branch_fails_the_run_and_nothing_follows_the_end() -> None:
    finished: list[str] = []
    graph = parallel_graph(failing="b3", finished=finished)
    sink, callback = recorded(graph)
    with pytest.raises(ValueError, match="b3 broke"):
        graph.invoke({"trail": [], "total": 0}, config(callback))
    deadline = time.monotonic() + 10  # the other branches may end after the graph raised
    while len(finished) < len(BRANCHES) - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(finished) == len(BRANCHES) - 1
    assert not callback._spans  # what the graph left running is forgotten, not leaked
    assert sink.events[-1].kind.type == "graph_failed"
    assert sink.events[-1].kind.error == "ValueError: b3 broke"
    state = only_run(sink.events)
    assert (state.status, state.node_failures) == (RunStatus.FAILED, 1)


class BrokenSink:
    """A sink whose broker is gone: every send raises."""

    def __init__(self) -> None:
        self.calls = 0

    def send(self, event: Event) -> None:
        self.calls += 1
        raise ConnectionError("broker unreachable")


@pytest.mark.unit
def test_a_failing_sink_never_breaks_the_graph() -> None:
    graph = support_graph(with_approval=False)
    sink = BrokenSink()
    callback = RunfoldCallback(graph, RunRecorder(sink), git_sha=GIT_SHA)
    inputs = {"messages": [], "total": 0, "trail": []}
    result = graph.invoke(inputs, config(callback))
    assert result["trail"] == ["plan", "fetch", "price", "answer"]
    assert (callback.sink_failures, sink.calls) == (1, 1)
    graph.invoke(inputs, config(callback))  # within retry_after: not even attempted
    assert (callback.runs_dropped, sink.calls) == (1, 1)


@pytest.mark.unit
def test_no_broker_at_start_up_costs_one_bounded_wait_and_no_exception() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    producer = EventProducer("events", bootstrap_servers=f"127.0.0.1:{port}",
                             startup_timeout=0.5)
    graph = support_graph(with_approval=False)
    callback = RunfoldCallback(graph, RunRecorder(producer), git_sha=GIT_SHA)
    inputs = {"messages": [], "total": 0, "trail": []}
    started = time.monotonic()
    for _ in range(3):
        assert graph.invoke(inputs, config(callback))["total"] == 120
    assert time.monotonic() - started < 5
    assert (callback.sink_failures, callback.runs_dropped) == (1, 2)


# Every kind the callback emits that the service's lane may take (a counted kind: the
# graph_* kinds always take the general path, and nest the user's own values, written in
# the user's order).
LANE_KINDS = frozenset(COUNTED_KINDS) - {"checkpoint_deleted"}  # the callback deletes none


@pytest.mark.unit
def test_payloads_of_counted_kinds_are_canonical_so_the_service_lane_takes_them() -> None:
    """The consumer's C lane takes a counted-kind record only when its payload text is
    serde.canonical_dumps of its value (keys in code point order); any other goes the
    general path, several times the CPU. The callback builds these payloads itself, so
    it writes their keys in that order."""
    events: list[Event] = []
    graph = support_graph(checkpointer=InMemorySaver())  # retry, tool, interrupt, resume
    sink, callback = recorded(graph)
    graph.invoke({"messages": [HumanMessage("hi")], "total": 0, "trail": []},
                 config(callback, "t-1"))
    graph.invoke(Command(resume="yes"), config(callback, "t-1"))
    events += sink.events
    graph = support_graph(fetch_failures=5, with_approval=False)  # node_failed
    sink, callback = recorded(graph)
    with pytest.raises(ConnectionError):
        graph.invoke({"messages": [], "total": 0, "trail": []}, config(callback))
    events += sink.events
    graph = tool_node_graph()  # tool payloads with the model's tool_call_id, tool_failed
    sink, callback = recorded(graph)
    graph.invoke({"messages": [HumanMessage("go")], "total": 0, "trail": []}, config(callback))
    events += sink.events

    counted = [e for e in events if e.kind.type in COUNTED_KINDS]
    assert {e.kind.type for e in counted} == LANE_KINDS
    for event in counted:
        text = serde.dumps(event.payload)
        assert text == serde.canonical_dumps(event.payload), (event.kind.type, text)
    lane = decoder()
    if lane is None:
        pytest.skip("the C lane is not built: the texts are canonical, its reading unchecked")
    codec = EventCodec()
    refused = [e.kind.type for e in counted
               if lane.read_value(str(e.run_id).encode(), codec.encode(e)) is None]
    assert refused == []


# --- through the real broker, folded ---------------------------------------------------


def read_events(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Event]:
    """Every event of ``topic`` (all partitions), polling until ``expected`` arrived."""
    decode = EventCodec().decode
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lg-{uuid.uuid4()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        events: list[Event] = []
        deadline = time.monotonic() + timeout
        while len(events) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                assert msg.error() is None, msg.error()
                events.append(decode(msg.value()))
        return events
    finally:
        consumer.close()


@pytest.fixture
def broker_recorder(kafka_settings: Any, unique_topics: Any) -> Callable[..., Any]:
    """``record(graph) -> (callback, finish)``; ``finish()`` closes the producer and returns
    the events read back from the events topic, in seq order per run."""

    def record(graph: Any) -> tuple[RunfoldCallback, Callable[[], list[Event]]]:
        producer = EventProducer(unique_topics.events, settings=kafka_settings)
        recorder = RunRecorder(producer)
        callback = RunfoldCallback(graph, recorder, git_sha=GIT_SHA)

        def finish() -> list[Event]:
            report = recorder.close(timeout=30)
            assert report.ok, report.summary()
            events = read_events(kafka_settings.bootstrap_servers, unique_topics.events,
                                 report.produced)
            assert len(events) == report.produced
            return events

        return callback, finish

    return record


def test_folded_run_equals_what_the_graph_did(broker_recorder: Callable[..., Any]) -> None:
    graph = support_graph(checkpointer=InMemorySaver())
    callback, finish = broker_recorder(graph)
    inputs = {"messages": [HumanMessage("what do I owe?")], "total": 0, "trail": []}
    graph.invoke(inputs, config(callback, "ticket-7"))
    result = graph.invoke(Command(resume="ok"), config(callback, "ticket-7"))
    events = finish()

    assert_contiguous(events)  # one partition per run: read back in seq order
    state = only_run(events)
    history = list(graph.checkpointer.list({"configurable": {"thread_id": "ticket-7"}}))
    assert state.run_id == callback.last_run_id
    assert state.status is RunStatus.COMPLETED
    assert (state.agent_spec_digest, state.git_sha) == (callback.agent_spec_digest, GIT_SHA)
    assert state.final_state_digest == state_digest(result)
    assert counters(state) == {
        "events_applied": len(events),
        # plan, fetch x2 (one retry), price, approve x2 (paused, then resumed), answer
        "nodes_entered": 7, "nodes_exited": 5, "retries": 1,
        "tool_calls": 1, "tool_returns": 1,
        "state_updates": 5, "messages": 2, "interrupts": 1,
        "checkpoints_saved": len(history), "checkpoints_restored": 1,
    }


def test_a_raising_graph_folds_to_failed(broker_recorder: Callable[..., Any]) -> None:
    graph = parallel_graph(failing="b2")
    callback, finish = broker_recorder(graph)
    with pytest.raises(ValueError):
        graph.invoke({"trail": [], "total": 0}, config(callback))
    events = finish()
    assert_contiguous(events)
    state = only_run(events)
    assert state.status is RunStatus.FAILED
    assert state.node_failures == 1
    assert events[-1].kind.type == "graph_failed"


def test_parallel_branches_through_the_broker_stay_contiguous(
    broker_recorder: Callable[..., Any]
) -> None:
    graph = parallel_graph(asynchronous=True)
    callback, finish = broker_recorder(graph)

    async def three_runs() -> None:
        await asyncio.gather(*(graph.ainvoke({"trail": [], "total": 0}, config(callback))
                               for _ in range(3)))

    asyncio.run(three_runs())
    events = finish()
    runs = fold(events).runs
    assert len(runs) == 3
    for run_id, state in runs.items():
        assert_contiguous([e for e in events if e.run_id == run_id])  # in partition order
        assert not any(state.violation_counts.values())
        assert (state.status, state.nodes_entered, state.tool_calls) == (
            RunStatus.COMPLETED, 7, 5)
    assert Counter(e.kind.type for e in events)["graph_started"] == 3


# --- packaging ---------------------------------------------------------------------------


@pytest.mark.unit
def test_importing_producers_does_not_need_langgraph() -> None:
    import subprocess
    import sys

    code = ("import sys, producers, producers.integrations; "
            "assert 'langgraph' not in sys.modules and 'langchain_core' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.unit
def test_without_a_recorder_it_builds_a_producer_from_the_settings(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNFOLD_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    callback = RunfoldCallback(support_graph())  # no connection is made here
    assert isinstance(callback.recorder.sink, EventProducer)
    assert callback.recorder.sink.config["bootstrap.servers"] == "127.0.0.1:1"
    assert callback.close().produced == 0
