"""Realistic run streams for the fold's tests and benchmark, with their expected outcome.

Until the fleet simulator lands (producers/), this is the stand-in: each generated
run comes with a manifest (the ``Run`` and counters it must fold to) computed here
from what was generated, not by the fold.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from uuid import UUID

from schemas import (
    CheckpointDeleted,
    CheckpointRestored,
    CheckpointSaved,
    Event,
    GraphCompleted,
    GraphFailed,
    GraphInterrupted,
    GraphStarted,
    MessageAdded,
    NodeEntered,
    NodeExited,
    NodeFailed,
    NodeRetrying,
    Run,
    RunStatus,
    StateUpdated,
    Timestamp,
    ToolCalled,
    ToolFailed,
    ToolReturned,
)

BASE_TIME = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z in ns
NODES = ("planner", "researcher", "coder", "critic", "summarizer")
TOOLS = ("web_search", "python", "read_file", "write_file", "sql")


@dataclass
class GeneratedRun:
    """One run's events in seq order and what folding them must give."""

    events: list[Event]
    run: Run
    counters: dict[str, int] = field(default_factory=dict)


def generate_run(
    rng: random.Random, *, max_steps: int = 12, start: int = BASE_TIME
) -> GeneratedRun:
    """A plausible agent run: started, a few node visits with tools and messages, an end."""
    run_id = UUID(int=rng.getrandbits(128), version=4)
    now = start + rng.randrange(10**9)
    events: list[Event] = []
    counters = dict.fromkeys(
        (
            "nodes_entered",
            "nodes_exited",
            "node_failures",
            "tool_calls",
            "tool_returns",
            "tool_failures",
            "retries",
            "checkpoints_saved",
            "checkpoints_restored",
            "checkpoints_deleted",
            "state_updates",
            "messages",
            "interrupts",
        ),
        0,
    )

    def emit(kind: object, payload: object = None, counter: str | None = None) -> None:
        nonlocal now
        now += rng.randrange(1_000, 50_000_000)  # 1 µs .. 50 ms apart, ns precision
        events.append(
            Event(
                run_id=run_id,
                seq=len(events) + 1,
                timestamp=Timestamp(now),
                kind=kind,  # type: ignore[arg-type]
                payload=payload if payload is not None else {},
            )
        )
        if counter is not None:
            counters[counter] += 1

    digest = f"sha256:{rng.getrandbits(256):064x}"
    sha = f"{rng.getrandbits(160):040x}"
    inputs = {"task": rng.choice(["summarize", "fix bug", "answer"]), "n": rng.randrange(100)}
    emit(
        GraphStarted(),
        {
            "agent_spec_digest": digest,
            "git_sha": sha,
            "inputs": inputs,
            "graph_name": "agent",
            "entry_point": "planner",
        },
    )
    started_at = events[0].timestamp
    for step in range(rng.randrange(1, max_steps + 1)):
        node = rng.choice(NODES)
        emit(NodeEntered(node_id=node, iteration=step), {}, "nodes_entered")
        for _ in range(rng.randrange(0, 3)):
            tool = rng.choice(TOOLS)
            emit(
                ToolCalled(tool_name=tool),
                {"args": {"q": f"item {rng.randrange(1000)}"}},
                "tool_calls",
            )
            if rng.random() < 0.9:
                emit(ToolReturned(tool_name=tool), {"bytes": rng.randrange(10_000)}, "tool_returns")
            else:
                emit(ToolFailed(tool_name=tool), {"error": "timeout"}, "tool_failures")
        emit(
            MessageAdded(
                role=rng.choice(["user", "assistant", "tool"]), content_length=rng.randrange(5000)
            ),
            {},
            "messages",
        )
        if rng.random() < 0.3:
            emit(StateUpdated(node_id=node, keys_changed=("plan", "notes")), {}, "state_updates")
        if rng.random() < 0.2:
            emit(CheckpointSaved(checkpoint_id=f"ck-{step}", node_id=node), {}, "checkpoints_saved")
        if rng.random() < 0.05:
            emit(
                CheckpointRestored(checkpoint_id=f"ck-{step}", node_id=node),
                {},
                "checkpoints_restored",
            )
        if rng.random() < 0.05:
            emit(CheckpointDeleted(checkpoint_id=f"ck-{step}"), {}, "checkpoints_deleted")
        if rng.random() < 0.08:
            emit(NodeRetrying(node_id=node, attempt=1, delay_ms=250), {}, "retries")
        if rng.random() < 0.05:
            emit(NodeFailed(node_id=node, error="boom"), {"trace": "..."}, "node_failures")
        if rng.random() < 0.05:
            emit(GraphInterrupted(reason="human_review", node_id=node), {}, "interrupts")
        emit(
            NodeExited(
                node_id=node, next_node=rng.choice([*NODES, None]), duration_ms=rng.randrange(2000)
            ),
            {},
            "nodes_exited",
        )
    ending = rng.random()
    status, finished_at, outputs, final_digest = RunStatus.RUNNING, None, None, None
    if ending < 0.8:
        outputs = {"answer": f"result {rng.randrange(10**6)}", "score": round(rng.random(), 3)}
        final_digest = f"{rng.getrandbits(128):032x}"
        emit(
            GraphCompleted(iterations=len(events), duration_ms=rng.randrange(10**6)),
            {"outputs": outputs, "final_state_digest": final_digest},
        )
        status = RunStatus.COMPLETED
    elif ending < 0.9:
        emit(GraphFailed(error="node crashed"), {})
        status = RunStatus.FAILED
    elif ending < 0.95:
        emit(GraphInterrupted(reason="cancelled", node_id="planner"), {}, "interrupts")
        status = RunStatus.CANCELLED
    if status is not RunStatus.RUNNING:
        finished_at = events[-1].timestamp
    run = Run(
        run_id=run_id,
        agent_spec_digest=digest,
        git_sha=sha,
        started_at=started_at,
        finished_at=finished_at,
        status=status,
        inputs=inputs,
        outputs=outputs,
        final_state_digest=final_digest,
    )
    counters["events_applied"] = len(events)
    return GeneratedRun(events, run, counters)


def generate_fleet(seed: int, runs: int, *, max_steps: int = 12) -> list[GeneratedRun]:
    """``runs`` independent runs, deterministic for a seed."""
    rng = random.Random(seed)
    return [generate_run(rng, max_steps=max_steps) for _ in range(runs)]


def interleave(fleet: Sequence[GeneratedRun], seed: int) -> Iterator[Event]:
    """The runs' events merged as a partition would carry them: each run in its order."""
    rng = random.Random(seed)
    cursors = [[run.events, 0] for run in fleet]
    live = [c for c in cursors if c[0]]
    while live:
        index = rng.randrange(len(live))
        cursor = live[index]
        events, position = cursor
        yield events[position]  # type: ignore[index]
        cursor[1] = position + 1  # type: ignore[operator]
        if cursor[1] == len(events):  # type: ignore[arg-type]
            live[index] = live[-1]
            live.pop()


def shuffle_within(events: Sequence[Event], block: int, rng: random.Random) -> list[Event]:
    """Reorder ``events`` inside consecutive blocks of ``block``: at most ``block - 1``
    of them wait in a reorder buffer at any moment."""
    out: list[Event] = []
    for start in range(0, len(events), block):
        chunk = list(events[start : start + block])
        rng.shuffle(chunk)
        out.extend(chunk)
    return out
