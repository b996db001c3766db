"""RunRecorder and AsyncRunRecorder: numbering, identity payload, and how runs end.

The sink is :class:`producers.ListSink`, the recorder's own seam (an object with
``send(event)``), not a stand-in for Kafka.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator

import pytest

from producers import AsyncRunRecorder, ListSink, RunClosedError, RunRecorder
from schemas import (
    Event,
    GraphInterrupted,
    NodeEntered,
    NodeExited,
    RunStatus,
    Timestamp,
    ToolCalled,
)

pytestmark = pytest.mark.unit

RUN_ID = uuid.UUID("6f1c2a9e-3b4d-4e5f-8a7b-0c1d2e3f4a5b")
START = 1_767_225_600_000_000_000


def stepping_clock(step_ms: int = 250) -> Callable[[], Timestamp]:
    """A clock that advances ``step_ms`` per reading, so durations are exact."""
    ticks: Iterator[int] = iter(range(10**9))

    def now() -> Timestamp:
        return Timestamp(START + next(ticks) * step_ms * 1_000_000)

    return now


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def recorder(sink: ListSink) -> RunRecorder:
    return RunRecorder(sink, clock=stepping_clock(), run_id_factory=lambda: RUN_ID)


def tags(events: list[Event]) -> list[str]:
    return [event.kind.type for event in events]


def test_completed_run_numbers_events_and_carries_identity_and_outputs(
    recorder: RunRecorder, sink: ListSink
) -> None:
    with recorder.run("spec-digest", "a" * 40, {"q": "why?"},
                      graph_name="qa", entry_point="plan") as run:
        run.emit(NodeEntered(node_id="plan", iteration=1), payload={"tokens": 12})
        run.emit(ToolCalled(tool_name="search"))
        run.emit(NodeExited(node_id="plan", next_node=None, duration_ms=3))
        run.emit(NodeEntered(node_id="plan", iteration=2))
        run.complete(outputs={"answer": 42}, final_state_digest="d" * 64)

    events = sink.events
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert {e.run_id for e in events} == {RUN_ID}
    assert tags(events) == ["graph_started", "node_entered", "tool_called", "node_exited",
                            "node_entered", "graph_completed"]
    assert events[0].payload == {"agent_spec_digest": "spec-digest", "git_sha": "a" * 40,
                                 "inputs": {"q": "why?"}, "graph_name": "qa",
                                 "entry_point": "plan"}
    assert list(events[0].payload) == ["agent_spec_digest", "git_sha", "inputs",  # type: ignore[arg-type]
                                       "graph_name", "entry_point"]
    assert events[1].payload == {"tokens": 12}
    assert events[2].payload == {}
    end = events[-1]
    assert end.kind.iterations == 2  # type: ignore[union-attr]
    # graph_started read the clock at tick 0, graph_completed at tick 5 (250 ms steps).
    assert end.kind.duration_ms == 1250
    assert int(end.timestamp) - int(events[0].timestamp) == 1250 * 1_000_000  # type: ignore[union-attr]
    assert end.payload == {"outputs": {"answer": 42}, "final_state_digest": "d" * 64}
    assert [int(e.timestamp) for e in events] == sorted(int(e.timestamp) for e in events)
    assert run.ended


def test_exception_ends_the_run_failed_and_propagates(recorder: RunRecorder,
                                                      sink: ListSink) -> None:
    with pytest.raises(ValueError, match="model said no"), recorder.run("s", "g", None) as run:
        run.emit(NodeEntered(node_id="n", iteration=1))
        raise ValueError("model said no")
    assert tags(sink.events) == ["graph_started", "node_entered", "graph_failed"]
    assert sink.events[-1].kind.error == "ValueError: model said no"  # type: ignore[union-attr]
    assert sink.events[-1].seq == 3


def test_cancel_ends_the_run_and_later_emits_are_refused(recorder: RunRecorder,
                                                         sink: ListSink) -> None:
    with recorder.run("s", "g", {}) as run:
        run.emit(NodeEntered(node_id="review", iteration=1))
        run.cancel("user pressed stop")
        with pytest.raises(RunClosedError, match="has ended"):
            run.emit(ToolCalled(tool_name="late"))
    assert tags(sink.events) == ["graph_started", "node_entered", "graph_interrupted"]
    cancel = sink.events[-1]
    assert cancel.kind == GraphInterrupted(reason="cancelled", node_id="review")
    assert cancel.payload == {"detail": "user pressed stop"}


def test_interrupt_is_a_pause_and_the_run_continues(recorder: RunRecorder,
                                                    sink: ListSink) -> None:
    with recorder.run("s", "g", {}) as run:
        run.emit(NodeEntered(node_id="draft", iteration=1))
        run.interrupt("human_review")
        run.emit(NodeEntered(node_id="draft", iteration=2))
    assert tags(sink.events)[-3:] == ["graph_interrupted", "node_entered", "graph_completed"]
    assert sink.events[2].kind == GraphInterrupted(reason="human_review", node_id="draft")


def test_emitting_an_ending_event_ends_the_run(recorder: RunRecorder, sink: ListSink) -> None:
    with recorder.run("s", "g", {}) as run:
        run.emit(GraphInterrupted(reason="cancelled", node_id="x"))
    assert tags(sink.events) == ["graph_started", "graph_interrupted"]


def test_keyboard_interrupt_cancels_the_run(recorder: RunRecorder, sink: ListSink) -> None:
    with pytest.raises(KeyboardInterrupt), recorder.run("s", "g", {}):
        raise KeyboardInterrupt
    assert sink.events[-1].kind == GraphInterrupted(reason="cancelled", node_id="")


def test_a_failed_send_does_not_use_up_the_seq() -> None:
    sent: list[Event] = []
    failures = iter([True, False])

    class FlakySink:
        def send(self, event: Event) -> None:
            if event.seq == 2 and next(failures):
                raise BufferError("queue full")
            sent.append(event)

    recorder = RunRecorder(FlakySink(), clock=stepping_clock())
    with recorder.run("s", "g", {}) as run:
        with pytest.raises(BufferError):
            run.emit(ToolCalled(tool_name="t"))
        run.emit(ToolCalled(tool_name="t"))
    assert [e.seq for e in sent] == [1, 2, 3]


def test_runs_get_distinct_ids_by_default(sink: ListSink) -> None:
    recorder = RunRecorder(sink)
    for _ in range(3):
        with recorder.run("s", "g", {}):
            pass
    assert len({e.run_id for e in sink.events}) == 3
    assert all(e.run_id.version == 4 for e in sink.events)


def test_async_recorder_emits_the_same_events_without_blocking(sink: ListSink) -> None:
    async def agent() -> None:
        recorder = AsyncRunRecorder(sink, clock=stepping_clock(), run_id_factory=lambda: RUN_ID)
        async with recorder.run("s", "g", {"x": 1}, graph_name="qa") as run:
            await run.emit(NodeEntered(node_id="a", iteration=1))
            await run.emit(ToolCalled(tool_name="t"))
            run.complete(outputs="done")
        await recorder.aclose()

    asyncio.run(agent())
    assert tags(sink.events) == ["graph_started", "node_entered", "tool_called", "graph_completed"]
    assert [e.seq for e in sink.events] == [1, 2, 3, 4]
    assert sink.events[-1].payload == {"outputs": "done", "final_state_digest": None}


def test_async_task_cancellation_publishes_a_cancelled_run(sink: ListSink) -> None:
    async def main() -> None:
        recorder = AsyncRunRecorder(sink, clock=stepping_clock())
        started = asyncio.Event()

        async def agent() -> None:
            async with recorder.run("s", "g", {}) as run:
                await run.emit(NodeEntered(node_id="wait", iteration=1))
                started.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(agent())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await recorder.aclose()

    asyncio.run(main())
    assert tags(sink.events) == ["graph_started", "node_entered", "graph_interrupted"]
    assert sink.events[-1].kind == GraphInterrupted(reason="cancelled", node_id="wait")


def test_async_failure_is_recorded(sink: ListSink) -> None:
    async def main() -> None:
        recorder = AsyncRunRecorder(sink, clock=stepping_clock())
        with pytest.raises(RuntimeError):
            async with recorder.run("s", "g", {}):
                raise RuntimeError("tool exploded")
        await recorder.aclose()

    asyncio.run(main())
    assert sink.events[-1].kind.error == "RuntimeError: tool exploded"  # type: ignore[union-attr]
    assert RunStatus.FAILED.is_terminal
