"""Literal events for the fold's tests: a run id, a start time and a factory."""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

from hypothesis import strategies as st

from schemas import EVENT_KINDS, Event, Timestamp

T0 = Timestamp.parse("2024-05-01T12:00:00Z")
"""Events made by ``event_factory`` happen at ``T0 + seq`` milliseconds unless told."""
MS = 1_000_000

RUN_ID = UUID("6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab")
START_PAYLOAD = {"agent_spec_digest": "spec-1", "git_sha": "abc123", "inputs": {"q": "hi"}}

# Short defaults so a test names only what it is about.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "graph_started": {},
    "graph_completed": {"iterations": 2, "duration_ms": 40},
    "graph_failed": {"error": "boom"},
    "node_entered": {"node_id": "plan", "iteration": 0},
    "node_exited": {"node_id": "plan", "next_node": None, "duration_ms": 5},
    "node_failed": {"node_id": "plan", "error": "boom"},
    "tool_called": {"tool_name": "search"},
    "tool_returned": {"tool_name": "search"},
    "tool_failed": {"tool_name": "search"},
    "checkpoint_saved": {"checkpoint_id": "ck1", "node_id": "plan"},
    "checkpoint_restored": {"checkpoint_id": "ck1", "node_id": "plan"},
    "checkpoint_deleted": {"checkpoint_id": "ck1"},
    "state_updated": {"node_id": "plan", "keys_changed": ["notes"]},
    "message_added": {"role": "user", "content_length": 12},
    "graph_interrupted": {"reason": "human_review", "node_id": "plan"},
    "node_retrying": {"node_id": "plan", "attempt": 1, "delay_ms": 100},
}


class EventFactory(Protocol):
    def __call__(
        self,
        seq: int,
        kind: str = "tool_called",
        payload: Any = None,
        *,
        at: int | None = None,
        run_id: UUID | None = None,
        **fields: Any,
    ) -> Event: ...


def make_event(
    seq: int,
    kind: str = "tool_called",
    payload: Any = None,
    *,
    at: int | None = None,
    run_id: UUID | None = None,
    **fields: Any,
) -> Event:
    """An event of ``RUN_ID`` (or ``run_id``) at ``seq``; ``graph_started`` gets the
    identity payload unless one is given; ``at`` is nanoseconds since the epoch."""
    if payload is None:
        payload = dict(START_PAYLOAD) if kind == "graph_started" else {}
    kind_fields = {**KIND_DEFAULTS[kind], **fields}
    return Event(
        run_id=run_id or RUN_ID,
        seq=seq,
        timestamp=Timestamp(T0 + seq * MS if at is None else at),
        kind=EVENT_KINDS[kind](**kind_fields),  # type: ignore[arg-type]
        payload=payload,
    )


# JSON values serde_json (and so the wire) can carry exactly: integers of i64/u64, finite floats.
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
STRATEGY_RUN_IDS = [UUID(int=n, version=4) for n in range(1, 6)]


@st.composite
def event_strategy(draw: st.DrawFn) -> Event:
    """Any valid Event: any kind, any seq (huge ones too), 5 runs, JSON payloads."""
    tag = draw(st.sampled_from(sorted(EVENT_KINDS)))
    fields = {}
    for name, info in EVENT_KINDS[tag].model_fields.items():
        if name == "type":
            continue
        annotation = str(info.annotation)
        if "int" in annotation:
            fields[name] = draw(st.integers(0, 2**32 - 1))
        elif "tuple" in annotation:
            fields[name] = draw(st.lists(st.text(max_size=3), max_size=2))
        elif name == "reason":
            fields[name] = draw(st.sampled_from(["cancelled", "human_review"]))
        else:
            fields[name] = draw(st.text(max_size=4))
    seq = draw(st.integers(0, 12) | st.integers(0, 2**64 - 1) | st.just(10**18))
    return Event(
        run_id=draw(st.sampled_from(STRATEGY_RUN_IDS)),
        seq=seq,
        timestamp=Timestamp(T0 + draw(st.integers(-(10**6), 10**6)) * MS),
        kind=EVENT_KINDS[tag](**fields),  # type: ignore[arg-type]
        payload=draw(_json),
    )
