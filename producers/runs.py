"""What one simulated run contains: its agent, its events' kinds and payloads, its faults.

Pure and deterministic: a run's plan depends only on the fleet seed, the run's index
and its agent, through a private ``random.Random`` (so interleaving with other agents
never changes what a run contains). Timestamps are not chosen here; the fleet's
virtual clock stamps events when they are emitted (:mod:`producers.fleet`).
"""

from __future__ import annotations

import functools
import hashlib
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, JsonValue

from producers.fastwrite import PlanRandom
from producers.faults import FaultRates
from schemas import (
    EVENT_KINDS,
    CheckpointDeleted,
    CheckpointRestored,
    CheckpointSaved,
    GraphFailed,
    GraphInterrupted,
    GraphStarted,
    MessageAdded,
    NodeEntered,
    NodeExited,
    NodeFailed,
    NodeRetrying,
    RunStatus,
    StateUpdated,
    ToolCalled,
    ToolFailed,
    ToolReturned,
    serde,
)
from schemas.avro_binary import trusted

__all__ = ["KIND_TAGS", "AgentProfile", "FaultPlan", "PlannedStep", "RunPlan", "agent_profiles",
           "kind_model", "plan_run"]

KIND_TAGS: dict[type[BaseModel], str] = {cls: tag for tag, cls in EVENT_KINDS.items()}
"""Kind class -> its ``type`` tag."""

_FIELD_NAMES: dict[type[BaseModel], tuple[str, ...]] = {
    cls: tuple(name for name in cls.model_fields if name != "type") for cls in EVENT_KINDS.values()
}

PlannedStep = tuple[type[BaseModel] | None, tuple[Any, ...], str]
"""One planned event: (kind class, its field values in declaration order, payload as the
serde JSON text). The terminal ``graph_completed`` has class ``None`` and no values:
its ``duration_ms`` is known only once the fleet stamps the run.

The planner keeps values and text rather than models and dicts: building a kind model
and a payload dict, then encoding both, was most of the simulator's cost per event.
:attr:`RunPlan.steps` gives the models and dicts when asked (a test proves they equal
the validated models and that the text is ``serde.dumps`` of the dict)."""


def kind_model(cls: type[BaseModel], values: tuple[Any, ...]) -> Any:
    """The kind model of planned ``values``, valid by construction, built without validation.

    Validation was a fifth of the simulator's cost per event; a test compares each kind
    of a fleet with the validated model of the same values.
    """
    fields = dict(zip(_FIELD_NAMES[cls], values, strict=True))
    return trusted(cls, {"type": KIND_TAGS[cls], **fields})


# Payload text written here equals serde.dumps of the dict it stands for: the fixed
# pieces and every string go through serde.dumps, ints print as serde prints them.
_json_string = functools.lru_cache(maxsize=4096)(serde.dumps)
_EMPTY = serde.dumps({})
_APPROVE = serde.dumps({"question": "approve the plan?"})
_APPROVED = serde.dumps({"approved": True})
_CANCELLED_BY_OPERATOR = serde.dumps({"detail": "cancelled by operator"})

MIN_EVENTS = 5
MAX_EVENTS = 80

_GRAPHS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("research", ("plan", "search", "read", "synthesize", "cite"),
     ("web_search", "http_get", "pdf_reader")),
    ("support-triage", ("classify", "lookup", "draft", "review"),
     ("crm_lookup", "kb_search", "send_email")),
    ("code-review", ("fetch_diff", "analyze", "run_tests", "comment"),
     ("git_diff", "pytest", "lint")),
    ("sql-analyst", ("understand", "write_sql", "execute", "explain"),
     ("schema_lookup", "sql_query", "chart")),
    ("planner", ("decompose", "schedule", "verify"),
     ("calendar", "python", "vector_lookup")),
)
_STATE_KEYS = ("messages", "plan", "context", "scratchpad", "results", "citations", "draft")
_ERRORS = ("rate limited by upstream", "tool timed out after 30s", "invalid JSON from model",
           "context window exceeded", "permission denied")


@dataclass(frozen=True)
class AgentProfile:
    """One simulated agent: its identity and the graph it runs."""

    name: str
    agent_spec_digest: str
    git_sha: str
    graph_name: str
    nodes: tuple[str, ...]
    tools: tuple[str, ...]


def agent_profiles(seed: int, count: int) -> list[AgentProfile]:
    """``count`` agents, the same for the same seed."""
    profiles = []
    for index in range(count):
        rng = random.Random(f"runfold-agent:{seed}:{index}")
        graph_name, nodes, tools = _GRAPHS[index % len(_GRAPHS)]
        profiles.append(
            AgentProfile(
                name=f"agent-{index:03d}",
                agent_spec_digest=hashlib.sha256(f"spec:{seed}:{index}".encode()).hexdigest(),
                git_sha=f"{rng.getrandbits(160):040x}",
                graph_name=graph_name,
                nodes=nodes,
                tools=tools,
            )
        )
    return profiles


@dataclass
class FaultPlan:
    """Where a run's faults go (seqs; ``None`` = that fault is not injected).

    - ``reorder``: seqs ``r, r+1, r+2`` are sent as ``r, r+2, r+1`` back to back;
    - ``dup``: seq ``d`` is sent again, identical, right after seq ``d+1``;
    - ``conflict``: seq ``c`` is sent again with other content right after seq ``c+1``;
    - ``gap``: seq ``g`` is never sent; seqs ``g+1`` and ``g+2`` are each stamped at least
      ``gap_delay`` after the event sent before them;
    - ``after_end``: one more event, seq ``n+1``, after the terminal event;
    - ``corrupt``: garbled records with the run's key (``corrupt`` of them), at the
      positions (indexes into the run's emission units) in ``corrupt_at``.
    """

    reorder: int | None = None
    dup: int | None = None
    conflict: int | None = None
    gap: int | None = None
    after_end: bool = False
    corrupt_at: list[int] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """The faults injected, by name."""
        names = [n for n in ("reorder", "dup", "conflict", "gap") if getattr(self, n) is not None]
        if self.after_end:
            names.append("after_end")
        if self.corrupt_at:
            names.append("corrupt")
        return names


@dataclass
class RunPlan:
    """Everything about one run but its timestamps.

    ``planned[i]`` is the :data:`PlannedStep` of seq ``i + 1``; :attr:`steps` gives
    ``(kind model, payload)`` pairs. The terminal step's ``graph_completed`` is a
    placeholder (``None`` kind) because its ``duration_ms`` depends on the timestamps:
    the fleet builds it when stamping.
    """

    index: int
    run_id: uuid.UUID
    agent: AgentProfile
    status: RunStatus
    inputs: JsonValue
    outputs: JsonValue
    final_state_digest: str | None
    iterations: int
    planned: list[PlannedStep]
    faults: FaultPlan
    rng: random.Random

    @property
    def length(self) -> int:
        """n: the number of distinct seqs (graph_started .. terminal)."""
        return len(self.planned)

    @functools.cached_property
    def steps(self) -> list[tuple[Any, JsonValue]]:
        """``(kind model, payload)`` per seq (``None`` kind for the terminal graph_completed)."""
        return [(None if cls is None else kind_model(cls, values), serde.loads(text))
                for cls, values, text in self.planned]


_WIDTH = {"reorder": 3, "dup": 2, "conflict": 2, "gap": 3}


def plan_run(seed: int, index: int, agent: AgentProfile, rates: FaultRates,
             *, fail_rate: float = 0.1, cancel_rate: float = 0.05,
             interrupt_rate: float = 0.15) -> RunPlan:
    """Plan run number ``index`` of the fleet (deterministic in its arguments)."""
    rng = PlanRandom(f"runfold-run:{seed}:{index}")
    run_id = uuid.UUID(int=rng.getrandbits(128), version=4)
    chosen = [name for name in ("reorder", "dup", "conflict", "gap")
              if getattr(rates, name) and rng.random() < getattr(rates, name)]
    after_end = bool(rates.after_end) and rng.random() < rates.after_end
    corrupt = bool(rates.corrupt) and rng.random() < rates.corrupt
    # Fault windows sit between graph_started and the terminal event without overlapping.
    needed = 2 + sum(_WIDTH[name] for name in chosen)
    length = max(rng.randint(MIN_EVENTS, MAX_EVENTS), needed)

    roll = rng.random()
    status = (RunStatus.FAILED if roll < fail_rate
              else RunStatus.CANCELLED if roll < fail_rate + cancel_rate
              else RunStatus.COMPLETED)
    ticket = rng.randint(1000, 99999)
    priority = rng.choice(["low", "normal", "high"])
    inputs: JsonValue = {"task": f"{agent.graph_name} task #{index}", "ticket": ticket,
                         "priority": priority}
    body, last_node, iterations = _body(rng, agent, length - 2,
                                        interrupted=length >= 10 and rng.random() < interrupt_rate)
    # serde.dumps of {"agent_spec_digest", "git_sha", "inputs", "graph_name", "entry_point"},
    # written from its pieces: the texts go through serde (cached), " task #<n>" needs
    # no escaping, numbers print as serde prints them (a test compares with serde.dumps).
    graph = _json_string(agent.graph_name)
    steps: list[PlannedStep] = [(GraphStarted, (), (
        f'{{"agent_spec_digest":{_json_string(agent.agent_spec_digest)},'
        f'"git_sha":{_json_string(agent.git_sha)},'
        f'"inputs":{{"task":{graph[:-1]} task #{index}","ticket":{ticket},'
        f'"priority":{_json_string(priority)}}},'
        f'"graph_name":{graph},"entry_point":{_json_string(agent.nodes[0])}}}'
    ))]
    steps.extend(body)
    outputs: JsonValue = None
    digest: str | None = None
    if status is RunStatus.COMPLETED:
        tokens = rng.randint(200, 20000)
        outputs = {"answer": f"result of {agent.graph_name} task #{index}", "tokens": tokens}
        digest = hashlib.sha256(f"state:{seed}:{index}".encode()).hexdigest()
        # serde.dumps({"outputs": outputs, "final_state_digest": digest}); hex needs no escape.
        steps.append((None, (), (
            f'{{"outputs":{{"answer":"result of {graph[1:-1]} task #{index}",'
            f'"tokens":{tokens}}},"final_state_digest":"{digest}"}}'
        )))
    elif status is RunStatus.FAILED:
        error = f"node {last_node} failed: {rng.choice(_ERRORS)}"
        steps.append((GraphFailed, (error,), _EMPTY))
    else:
        steps.append((GraphInterrupted, ("cancelled", last_node), _CANCELLED_BY_OPERATOR))

    faults = _layout(rng, chosen, length)
    faults.after_end = after_end
    if corrupt:
        faults.corrupt_at = [rng.randint(0, length)]
    return RunPlan(index, run_id, agent, status, inputs, outputs, digest, iterations,
                   steps, faults, rng)


def _layout(rng: random.Random, chosen: list[str], length: int) -> FaultPlan:
    """Place the chosen fault windows in seqs 2..n-1, in random order but the gap last.

    The gap goes last so that the run has moved past it (the consumer declared it)
    before any other window starts.
    """
    order = [name for name in chosen if name != "gap"]
    rng.shuffle(order)
    if "gap" in chosen:
        order.append("gap")
    slack = (length - 2) - sum(_WIDTH[name] for name in order)
    plan = FaultPlan()
    cursor = 2
    for name in order:
        skip = rng.randint(0, slack) if slack else 0
        slack -= skip
        cursor += skip
        setattr(plan, name, cursor)
        cursor += _WIDTH[name]
    return plan


def _body(rng: random.Random, agent: AgentProfile, count: int, *,
          interrupted: bool) -> tuple[list[PlannedStep], str, int]:
    """``count`` middle events: nodes with tools, messages, state, checkpoints, retries."""
    events: list[PlannedStep] = []
    iteration = 0
    node = agent.nodes[0]
    checkpoints: list[tuple[str, str]] = []
    interrupt_at = rng.randint(count // 3, max(count // 3, 2 * count // 3)) if interrupted else -1
    while len(events) < count:
        iteration += 1
        for position, node in enumerate(agent.nodes):
            if len(events) >= count:
                break
            if len(events) >= interrupt_at >= 0 and checkpoints:
                checkpoint_id, at_node = checkpoints[-1]
                events.append((GraphInterrupted, ("human_review", at_node), _APPROVE))
                events.append((CheckpointRestored, (checkpoint_id, at_node), _APPROVED))
                interrupt_at = -1
            events.append((NodeEntered, (node, iteration),
                           f'{{"input_tokens":{rng.randint(50, 4000)}}}'))
            events.extend(_node_actions(rng, agent, node, iteration, checkpoints))
            following = agent.nodes[position + 1] if position + 1 < len(agent.nodes) else None
            events.append((NodeExited, (node, following, rng.randint(5, 30000)), _EMPTY))
    return events[:count], node, iteration


def _node_actions(rng: random.Random, agent: AgentProfile, node: str, iteration: int,
                  checkpoints: list[tuple[str, str]]) -> list[PlannedStep]:
    actions: list[PlannedStep] = []
    for _ in range(rng.randint(1, 3)):
        pick = rng.random()
        if pick < 0.35:
            tool = rng.choice(agent.tools)
            actions.append((ToolCalled, (tool,),
                            f'{{"args":{{"query":{_json_string(f"{node}-{iteration}")}}}}}'))
            if rng.random() < 0.1:
                actions.append((ToolFailed, (tool,),
                                f'{{"error":{_json_string(rng.choice(_ERRORS))}}}'))
                actions.append((NodeRetrying, (node, 1, rng.choice([100, 250, 500, 1000])),
                                _EMPTY))
                actions.append((ToolCalled, (tool,),
                                f'{{"args":{{"query":{_json_string(f"{node}-retry")}}}}}'))
            actions.append((ToolReturned, (tool,), f'{{"bytes":{rng.randint(10, 50000)}}}'))
        elif pick < 0.65:
            role = rng.choice(["user", "assistant", "tool", "system"])
            actions.append((MessageAdded, (role, rng.randint(1, 20000)), _EMPTY))
        elif pick < 0.85:
            keys = tuple(sorted(rng.sample(_STATE_KEYS, rng.randint(1, 3))))
            actions.append((StateUpdated, (node, keys), _EMPTY))
        elif pick < 0.95:
            checkpoint_id = f"cp-{iteration}-{node}-{rng.getrandbits(32):08x}"
            checkpoints.append((checkpoint_id, node))
            actions.append((CheckpointSaved, (checkpoint_id, node), _EMPTY))
            if len(checkpoints) > 3:
                old, _ = checkpoints.pop(0)
                actions.append((CheckpointDeleted, (old,), _EMPTY))
        else:
            actions.append((NodeFailed, (node, rng.choice(_ERRORS)), _EMPTY))
            actions.append((NodeRetrying, (node, rng.randint(1, 3), rng.choice([250, 1000, 5000])),
                            _EMPTY))
    return actions
