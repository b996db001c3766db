"""A deterministic fleet of simulated agents, with fault injection and a ground-truth manifest.

``Fleet(FleetConfig(runs=1000, agents=8, seed=7, faults=FaultRates(gap=0.01))).records()``
yields ``(key, value, meta)`` for every record the fleet sends: key = run_id text
(UTF-8), value = codec bytes (or garbled bytes for a ``corrupt`` fault). The same
config gives the same records byte for byte: run ids come from the seed and
timestamps from a virtual clock that starts at ``FleetConfig.start`` and advances
by seeded ticks, never from wall time. :func:`produce_fleet` sends them through an
:class:`~producers.kafka.EventProducer`.

Agents run in parallel: each works through its own runs one after another; at each
step a seeded scheduler picks which agent sends next, so runs interleave in the
stream while each run's records keep their order.

Faults (per run, with the probabilities of :class:`~producers.faults.FaultRates`)
and what the manifest says the consumer must do (DESIGN.md §5):

========== ============================================== ===================================
fault      what is sent                                   expected outcome
========== ============================================== ===================================
reorder    seqs r, r+2, r+1 back to back (timestamps      no violation; all applied; same
           in seq order, milliseconds apart)              final state
dup        seq d again, byte-identical, after seq d+1     ``duplicate`` outcome (dropped and
                                                          counted) with the ``duplicate``
                                                          violation (d, d) riding along
conflict   seq c again with other content, after c+1      ``conflict`` violation (c, c);
                                                          not applied
gap        seq g never sent; g+1 and g+2 each stamped     ``gap`` violation (g, g); every
           >= gap_delay after the event before them       other event applied
after_end  seq n+1 after the terminal event               ``after_terminal`` violation
                                                          (n+1, n+1); status unchanged
corrupt    one record of garbled bytes with the run's     DLQ; the fold does not change
           key (wrong magic byte, unknown fingerprint
           or a valid message truncated inside its body)
========== ============================================== ===================================

Fault windows never overlap, and a gap is the last window before the terminal event,
so each fault's outcome does not depend on the others. The manifest is computed from
the simulator's own knowledge of what it sent, not by running the fold.
"""

from __future__ import annotations

import json
import operator
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, overload

from producers.fastwrite import PlanRandom, completed_kind, direct_writer
from producers.faults import FaultRates
from producers.manifest import SEMANTICS, expected_counters, violation
from producers.runs import (
    KIND_TAGS,
    AgentProfile,
    FaultPlan,
    RunPlan,
    agent_profiles,
    kind_model,
    plan_run,
)
from schemas import (
    MAX_REORDER_DELAY_NS,
    Event,
    MessageAdded,
    Run,
    RunStatus,
    Timestamp,
    ToolCalled,
    serde,
)
from schemas.avro_binary import write_stamp
from schemas.codec import event_encoder
from schemas.errors import ConfigError

__all__ = [
    "DEFAULT_START",
    "Fleet",
    "FleetConfig",
    "FleetResult",
    "RecordMeta",
    "default_gap_delay_ms",
    "produce_fleet",
]

DEFAULT_START = Timestamp(1_767_225_600_000_000_000)
"""The virtual clock's start: 2026-01-01T00:00:00Z."""

_GAP_MARGIN_MS = 1_000


def default_gap_delay_ms() -> int:
    """How far apart a gap's following events are stamped: the fold's reorder bound + 1 s.

    The fold declares a gap when a run's newest timestamp is its reorder bound
    (:data:`schemas.MAX_REORDER_DELAY_NS`, ``FoldConfig.max_delay_ns``'s default) past
    its oldest buffered event; stamping past that bound makes the declaration depend
    on event time only, never on how fast the consumer runs.
    """
    return MAX_REORDER_DELAY_NS // 1_000_000 + _GAP_MARGIN_MS


class RecordMeta(NamedTuple):
    """What the simulator knows about a record it yields."""

    run_id: str
    seq: int | None
    """The event's seq; ``None`` for a corrupt record."""
    fault: str | None
    """``dup``, ``conflict``, ``after_end``, ``corrupt``, or ``None`` for a normal event."""
    run_index: int


@dataclass(frozen=True)
class FleetConfig:
    """What to simulate. Everything here, and nothing else, decides the records."""

    runs: int
    agents: int = 8
    seed: int = 0
    faults: FaultRates = field(default_factory=FaultRates)
    gap_delay_ms: int = field(default_factory=default_gap_delay_ms)
    start: Timestamp = DEFAULT_START
    tick_us: tuple[int, int] = (50, 500)
    """Bounds of the virtual clock's step between two records of the fleet."""
    fail_rate: float = 0.1
    cancel_rate: float = 0.05
    interrupt_rate: float = 0.15

    def __post_init__(self) -> None:
        if self.runs < 0:
            raise ConfigError(f"runs={self.runs} must be 0 or more")
        if self.agents < 1:
            raise ConfigError(f"agents={self.agents} must be at least 1")
        if self.gap_delay_ms < 1:
            raise ConfigError(f"gap_delay_ms={self.gap_delay_ms} must be positive")


# Instructions inside an emission unit (a run's records the agent sends back to back).
_EVENT, _DUP, _CONFLICT, _AFTER_END, _CORRUPT, _JUMP = range(6)


def _units(plan: RunPlan) -> list[int | list[tuple[int, int]]]:
    """The run's emission units, in order.

    A unit that is one event alone (most of them) is its seq; any other is a list of
    ``(instruction, seq)``.
    """
    faults, n = plan.faults, plan.length
    units: list[int | list[tuple[int, int]]] = []
    seq = 1
    while seq <= n:
        if seq == faults.gap:
            seq += 1
            continue
        if seq == faults.reorder:
            units.append([(_EVENT, seq), (_EVENT, seq + 2), (_EVENT, seq + 1)])
            seq += 3
            continue
        if faults.gap is not None and seq in (faults.gap + 1, faults.gap + 2):
            units.append([(_JUMP, 0), (_EVENT, seq)])
        else:
            units.append(seq)
        if faults.dup is not None and seq == faults.dup + 1:
            units.append([(_DUP, faults.dup)])
        if faults.conflict is not None and seq == faults.conflict + 1:
            units.append([(_CONFLICT, faults.conflict)])
        seq += 1
    if faults.after_end:
        units.append([(_AFTER_END, n + 1)])
    for position in faults.corrupt_at:
        units.insert(min(position, len(units)), [(_CORRUPT, 0)])
    return units


class _RunInFlight:
    """A run an agent is sending: its plan, units left and what was stamped so far."""

    __slots__ = ("corrupt", "dup", "encoded", "heads", "index", "key", "next_unit", "plan",
                 "records", "run_id", "stamps", "tails", "units")

    def __init__(self, plan: RunPlan) -> None:
        self.plan = plan
        self.index = plan.index
        self.dup = plan.faults.dup
        self.run_id = str(plan.run_id)
        self.key = self.run_id.encode()
        self.units = _units(plan)
        self.next_unit = 0
        self.stamps: dict[int, int] = {}
        """seq -> timestamp (ns) of the events stamped so far."""
        self.encoded: dict[int, bytes] = {}
        self.records = 0
        self.corrupt = 0
        self.heads: list[bytes] = []
        """seq -> the event's bytes before its timestamp (with a direct writer)."""
        self.tails: list[bytes | None] = []
        """seq -> the event's bytes after its timestamp; None for graph_completed."""


class _SentRun(NamedTuple):
    """What the manifest needs of a run once it was sent (not its steps nor its generator)."""

    run_id: str
    run_index: int
    uuid: Any
    agent: AgentProfile
    status: RunStatus
    inputs: Any
    outputs: Any
    final_state_digest: str | None
    faults: FaultPlan
    events: int
    applied_classes: tuple[Any, ...]
    """The kind class of each applied event (None: graph_completed)."""
    started_at: int
    finished_at: int
    records: int
    corrupt: int


_step_class = operator.itemgetter(0)
_new_meta = tuple.__new__  # RecordMeta(...) without NamedTuple's Python-level __new__


class Fleet:
    """Generates a fleet's records deterministically and keeps the manifest of what it sent."""

    def __init__(self, config: FleetConfig, *, encode: Callable[[Event], bytes] | None = None,
                 framing: str = "single-object") -> None:
        self.config = config
        self.agents: list[AgentProfile] = agent_profiles(config.seed, config.agents)
        self._encode = encode or event_encoder(framing)
        # The default encoder's bytes, written here without building each Event model
        # (it was most of the simulator's cost); None when another encoder is used.
        self._direct = direct_writer() if encode is None and framing == "single-object" else None
        # The ground truth of each run sent, made into manifest entries when asked for:
        # building them while sending cost ~4 us per event the producer does not need.
        self._sent: list[_SentRun] = []
        self._manifest: dict[str, Any] | None = None
        self._finished = False

    @property
    def runs_finished(self) -> int:
        """Runs whose every record has been generated so far."""
        return len(self._sent)

    @overload
    def records(self, *, meta: Literal[True] = True) -> Iterator[tuple[bytes, bytes, RecordMeta]]:
        ...

    @overload
    def records(self, *, meta: Literal[False]) -> Iterator[tuple[bytes, bytes, None]]:
        ...

    def records(self, *, meta: bool = True) -> Iterator[tuple[bytes, bytes, RecordMeta | None]]:
        """Yield every record ``(key, value, meta)``; the manifest is complete at the end.

        ``meta=False`` yields ``None`` for ``meta`` (the records are the same): a sender
        that does not read it saves building one per record.
        """
        with_meta = meta
        config = self.config
        scheduler = PlanRandom(f"runfold-fleet:{config.seed}")
        # The scheduler's draws are PlanRandom.below's (getrandbits of n's bit length,
        # again while out of range), written out inline in the common path; the pinned
        # records prove the sequence is unchanged.
        below = scheduler.below
        getrandbits = scheduler.getrandbits
        tick_lo, tick_hi = (t * 1_000 for t in config.tick_us)
        tick_width = tick_hi - tick_lo + 1
        tick_bits = tick_width.bit_length()
        jump = config.gap_delay_ms * 1_000_000
        now = int(config.start)
        direct = self._direct
        inline = direct is not None
        # Agent a runs fleet runs a, a + M, a + 2M, ... one after another.
        queues = [list(range(a, config.runs, config.agents)) for a in range(config.agents)]
        for queue in queues:
            queue.reverse()
        active: list[tuple[int, _RunInFlight]] = []
        for agent_index, queue in enumerate(queues):
            if queue:
                active.append((agent_index, self._start(queue.pop(), agent_index)))
        while active:
            count = len(active)  # slot = scheduler.below(len(active)), inline
            bits = count.bit_length()
            slot = getrandbits(bits)
            while slot >= count:
                slot = getrandbits(bits)
            agent_index, run = active[slot]
            unit = run.units[run.next_unit]
            run.next_unit += 1
            if unit.__class__ is int:
                # The common unit, one event (the loop below, unrolled).
                seq: int = unit
                if inline:
                    tick = getrandbits(tick_bits)
                    while tick >= tick_width:
                        tick = getrandbits(tick_bits)
                    now += tick_lo + tick
                    run.stamps[seq] = now
                    tail = run.tails[seq]
                    if tail is not None:
                        # DirectWriter.write's bytes: only the stamp was not known before.
                        value = b"".join((run.heads[seq], write_stamp(now), tail))
                    else:
                        value = direct(run, seq)  # type: ignore[misc]
                    if seq == run.dup:
                        run.encoded[seq] = value
                    record_meta = (_new_meta(RecordMeta, (run.run_id, seq, None, run.index))
                                   if with_meta else None)
                else:
                    now += tick_lo + below(tick_width)  # scheduler.randint(tick_lo, tick_hi)
                    run.stamps[seq] = now
                    value, record_meta = self._record(run, _EVENT, seq, Timestamp(now))
                run.records += 1
                yield run.key, value, record_meta
            else:
                if unit[0][0] == _JUMP:  # type: ignore[index]
                    now += jump
                # Stamp in seq order, emit in unit order: a reordered pair keeps true times.
                for seq in sorted(seq for op, seq in unit if op == _EVENT):  # type: ignore[union-attr]
                    now += tick_lo + below(tick_width)
                    run.stamps[seq] = now
                for op, seq in unit:  # type: ignore[union-attr]
                    if op == _JUMP:
                        continue
                    if op != _EVENT:
                        now += tick_lo + below(tick_width)
                    value, record_meta = self._record(run, op, seq, Timestamp(now))
                    run.records += 1
                    yield run.key, value, record_meta if with_meta else None
            if run.next_unit == len(run.units):
                self._finish_run(run)
                queue = queues[agent_index]
                if queue:
                    active[slot] = (agent_index, self._start(queue.pop(), agent_index))
                else:
                    active.pop(slot)
        self._finished = True

    def _start(self, index: int, agent_index: int) -> _RunInFlight:
        config = self.config
        plan = plan_run(config.seed, index, self.agents[agent_index], config.faults,
                        fail_rate=config.fail_rate, cancel_rate=config.cancel_rate,
                        interrupt_rate=config.interrupt_rate)
        run = _RunInFlight(plan)
        if self._direct is not None:
            run.heads, run.tails = self._direct.parts(run)
        return run

    def _record(self, run: _RunInFlight, op: int, seq: int,
                now: Timestamp) -> tuple[bytes, RecordMeta]:
        plan = run.plan
        if op == _EVENT:
            direct = self._direct
            value = direct(run, seq) if direct is not None else self._encode(self._event(run, seq))
            if seq == plan.faults.dup:
                run.encoded[seq] = value
            return value, RecordMeta(run.run_id, seq, None, plan.index)
        if op == _DUP:
            return run.encoded[seq], RecordMeta(run.run_id, seq, "dup", plan.index)
        if op == _CONFLICT:
            other = Event(run_id=plan.run_id, seq=seq, timestamp=now,
                          kind=ToolCalled(tool_name="conflicting-writer"),
                          payload={"conflict": True, "writer": "second agent process"})
            return self._encode(other), RecordMeta(run.run_id, seq, "conflict", plan.index)
        if op == _AFTER_END:
            late_kind = MessageAdded(role="assistant", content_length=plan.rng.randint(1, 999))
            late = Event(run_id=plan.run_id, seq=seq, timestamp=now, kind=late_kind,
                         payload={"late": True})
            return self._encode(late), RecordMeta(run.run_id, seq, "after_end", plan.index)
        run.corrupt += 1
        return self._garble(run), RecordMeta(run.run_id, None, "corrupt", plan.index)

    def _event(self, run: _RunInFlight, seq: int) -> Event:
        plan = run.plan
        cls, values, text = plan.planned[seq - 1]
        stamp = run.stamps[seq]
        kind = (completed_kind(plan, stamp - run.stamps[1]) if cls is None
                else kind_model(cls, values))
        payload = serde.loads(text)
        # Every field is already a validated value of the right type (the kind is a model,
        # the payload plain JSON read from the planned text), so skip re-validation: it
        # was a third of the simulator's time per event.
        return Event.model_construct(run_id=plan.run_id, seq=seq, timestamp=Timestamp(stamp),
                                     kind=kind, payload=payload)

    def _garble(self, run: _RunInFlight) -> bytes:
        """Bytes no reader can decode, with a reason the DLQ header will name."""
        rng = run.plan.rng
        variant = rng.randrange(3)
        if variant == 0:  # wrong magic byte
            first = rng.choice([b for b in range(1, 256) if b != 0xC3])
            return bytes([first]) + rng.randbytes(rng.randint(8, 60))
        if variant == 1:  # single-object header with a fingerprint of no kept schema
            return b"\xc3\x01" + rng.randbytes(8) + rng.randbytes(rng.randint(4, 60))
        # A real message cut inside the run_id string at the start of its body.
        probe = Event(run_id=run.plan.run_id, seq=1, timestamp=Timestamp(0),
                      kind=ToolCalled(tool_name="probe"), payload={})
        whole = self._encode(probe)
        return whole[: 10 + rng.randint(1, 20)]

    def _finish_run(self, run: _RunInFlight) -> None:
        """Keep what the run's ground truth needs; :meth:`manifest` writes it out."""
        plan = run.plan
        planned = plan.planned
        # Kept as the classes in seq order (a C-speed copy); counted when the manifest
        # is written.
        classes = tuple(map(_step_class, planned))
        gap = plan.faults.gap
        if gap is not None:
            classes = classes[: gap - 1] + classes[gap:]
        n = plan.length
        self._sent.append(_SentRun(
            run.run_id, plan.index, plan.run_id, plan.agent, plan.status, plan.inputs,
            plan.outputs, plan.final_state_digest, plan.faults, n, classes,
            run.stamps[1], run.stamps[n], run.records, run.corrupt,
        ))

    def manifest(self) -> dict[str, Any]:
        """The ground truth: per run (in order of completion) and totals.

        Only complete once :meth:`records` has been exhausted. Built on the first call
        (from what the simulator sent, never from the fold) and kept.
        """
        if not self._finished:
            raise ConfigError("the manifest is complete only after every record was generated")
        if self._manifest is None:
            self._manifest = self._build_manifest()
        return {**self._manifest, "runs": list(self._manifest["runs"])}

    def _build_manifest(self) -> dict[str, Any]:
        config = self.config
        totals: Counter[str] = Counter()
        entries = [_manifest_entry(sent, totals) for sent in self._sent]
        return {
            "format": "runfold-fleet-manifest/1",
            "config": {
                "runs": config.runs,
                "agents": config.agents,
                "seed": config.seed,
                "faults": config.faults.as_text(),
                "gap_delay_ms": config.gap_delay_ms,
                "start": config.start.isoformat(),
            },
            "semantics": SEMANTICS,
            "totals": dict(sorted(totals.items())),
            "runs": sorted(entries, key=lambda entry: entry["index"]),
        }

    def write_manifest(self, path: str | Path) -> Path:
        """Write :meth:`manifest` as JSON to ``path``."""
        target = Path(path)
        target.write_text(json.dumps(self.manifest(), indent=1) + "\n")
        return target


def _manifest_entry(sent: _SentRun, totals: Counter[str]) -> dict[str, Any]:
    """One run's ground truth (and its share of ``totals``) from what was sent."""
    faults, n = sent.faults, sent.events
    terminal = sent.status is not RunStatus.RUNNING
    expected = Run(
        run_id=sent.uuid,
        agent_spec_digest=sent.agent.agent_spec_digest,
        git_sha=sent.agent.git_sha,
        started_at=Timestamp(sent.started_at),
        finished_at=Timestamp(sent.finished_at) if terminal else None,
        status=sent.status,
        inputs=sent.inputs,
        outputs=sent.outputs,
        final_state_digest=sent.final_state_digest,
    )
    # A duplicate is counted ('duplicates'), not a violation: the consumer publishes none
    # unless asked (DESIGN.md §5).
    violations: list[dict[str, Any]] = []
    if faults.conflict is not None:
        violations.append(violation("conflict", faults.conflict))
    if faults.gap is not None:
        violations.append(violation("gap", faults.gap))
    if faults.after_end:
        violations.append(violation("after_terminal", n + 1))
    violations.sort(key=lambda v: (v["first_seq"], v["kind"]))
    applied = n - (1 if faults.gap is not None else 0)
    duplicates = 1 if faults.dup is not None else 0
    applied_kinds = Counter({
        "graph_completed" if cls is None else KIND_TAGS[cls]: count
        for cls, count in Counter(sent.applied_classes).items()
    })
    totals["runs"] += 1
    totals["records"] += sent.records
    totals["events"] += n
    totals["applied"] += applied
    totals["duplicates"] += duplicates
    totals["dlq"] += sent.corrupt
    totals["violations"] += len(violations)
    for reported in violations:
        totals[f"violations.{reported['kind']}"] += 1
    totals[f"status.{sent.status.value}"] += 1
    return {
        "run_id": sent.run_id,
        "index": sent.run_index,
        "agent": sent.agent.name,
        "faults": faults.names,
        "events": n,
        "records": sent.records,
        "applied": applied,
        "duplicates": duplicates,
        "dlq": sent.corrupt,
        "violations": violations,
        "applied_kinds": dict(sorted(applied_kinds.items())),
        "counters": expected_counters(applied_kinds, applied, duplicates, faults),
        "run": json.loads(_run_json(expected)),
    }


def _run_json(run: Run) -> str:
    to_json = getattr(run, "to_json", None)
    return str(to_json()) if callable(to_json) else run.model_dump_json()


@dataclass
class FleetResult:
    """What :func:`produce_fleet` did: records sent, the delivery report, the time taken."""

    records: int
    seconds: float
    report: Any
    manifest_path: Path | None = None

    @property
    def records_per_second(self) -> float:
        """Records sent per wall-clock second (including the final flush)."""
        return self.records / self.seconds if self.seconds > 0 else 0.0


def produce_fleet(
    fleet: Fleet,
    producer: Any,
    *,
    rate: float | None = None,
    on_record: Callable[[int], None] | None = None,
    manifest_path: str | Path | None = None,
    flush_timeout: float = 60.0,
) -> FleetResult:
    """Send every record of ``fleet`` through ``producer`` (``produce(key, value)``).

    ``rate`` caps records per second (wall clock). ``on_record(n)`` is called every few
    hundred records with how many were sent so far (progress bars). Returns after the
    producer was flushed; the manifest is written if ``manifest_path`` is given.
    """
    if rate is not None and rate <= 0:
        raise ConfigError(f"rate={rate} must be positive (records per second)")
    started = time.monotonic()
    sent = 0
    pace_every = max(1, int(rate // 50)) if rate else 0
    produce_many = getattr(producer, "produce_many", None) if rate is None else None
    if produce_many is not None:
        # EventProducer's own loop: the same records, without a call per record.
        sent = produce_many(fleet.records(meta=False), on_progress=on_record)
    for key, value, _meta in fleet.records() if produce_many is None else ():
        producer.produce(key, value)
        sent += 1
        if pace_every and sent % pace_every == 0:
            ahead = started + sent / rate - time.monotonic()  # type: ignore[operator]
            if ahead > 0:
                time.sleep(ahead)
        if on_record is not None and sent % 500 == 0:
            on_record(sent)
    report = producer.flush(flush_timeout)
    seconds = time.monotonic() - started
    if on_record is not None:
        on_record(sent)
    written = fleet.write_manifest(manifest_path) if manifest_path is not None else None
    return FleetResult(records=sent, seconds=seconds, report=report, manifest_path=written)
