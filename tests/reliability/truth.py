"""Ground truth of a scenario and the measurement of what Kafka and the fold hold against it.

The truth is the fleet simulator's manifest, regenerated in-process from the same
deterministic :class:`~producers.fleet.FleetConfig` that ``runfold produce`` was given
(a killed producer never writes its own), with every record's (run_id, seq, fault) in
send order. :func:`measure` compares it with the events topic and the folded output;
:func:`write_row` stores the result as one JSON row under :data:`RESULTS_DIR`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from producers import FaultRates, Fleet, FleetConfig

if TYPE_CHECKING:
    from harness import EventsOnTopic, Folded

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = Path(os.environ.get("RELIABILITY_OUT", ROOT / ".runfold" / "reliability"))
"""Where each scenario's JSON row is written (``report.py`` reads them)."""


@dataclass
class Truth:
    """What the fleet sent: its manifest and each record's (run_id, seq, fault) in send order."""

    manifest: dict[str, Any]
    sent: list[tuple[str, int | None, str | None]]

    @property
    def events(self) -> int:
        return int(self.manifest["totals"].get("events", 0))


def fleet_truth(config: FleetConfig) -> Truth:
    """Regenerate the fleet of ``config`` in-process (same records as ``runfold produce``)."""
    fleet = Fleet(config)
    sent = [(meta.run_id, meta.seq, meta.fault) for _, _, meta in fleet.records()]
    return Truth(fleet.manifest(), sent)


def fleet_config(runs: int, seed: int, faults: str = "", agents: int = 16) -> FleetConfig:
    """A fleet of ``runs`` runs (about 35 events each)."""
    return FleetConfig(runs=runs, agents=agents, seed=seed, faults=FaultRates.parse(faults))


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the reliability table."""

    scenario: str
    injected: str
    events: int
    lost: int
    duplicated: int
    order_violations: int
    state_equals_truth: bool
    recovery_s: float | None
    details: dict[str, Any] = field(default_factory=dict)


def write_row(row: Row) -> Path:
    """Store ``row`` as ``<RESULTS_DIR>/<scenario id>.json``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    slug = row.scenario.split(" ", 1)[0].strip(".").lower()
    path = RESULTS_DIR / f"{slug}.json"
    path.write_text(json.dumps(asdict(row), indent=1) + "\n")
    return path


@dataclass
class Measurement:
    """The comparison of what Kafka holds and what was folded with the ground truth."""

    lost: int = 0
    duplicated: int = 0
    order_violations: int = 0
    state_mismatches: list[str] = field(default_factory=list)
    topic_duplicates: int = 0
    """Records the producer wrote more than once (after timeouts); the fold must drop them."""
    partial_runs: int = 0
    """Runs with some but not all of their events on the topic (an indeterminate tail)."""

    @property
    def state_equals_truth(self) -> bool:
        return not self.state_mismatches


def _expected_violations(entry: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    return sorted((v["kind"], v["first_seq"], v["last_seq"]) for v in entry["violations"])


def measure(
    truth: Truth,
    on_topic: EventsOnTopic,
    folded: Folded,
    *,
    must_be_present: Callable[[str, int], bool] = lambda run_id, seq: True,
    tails_only: bool = True,
) -> Measurement:
    """Lost, duplicated, out of order, and folded state vs truth.

    ``must_be_present(run_id, seq)`` says which sent events had to reach Kafka (all of them
    unless the producer was killed: then only the acknowledged ones).

    Copies of a record the producer wrote more than once (librdkafka re-sends in-flight
    records after a timeout under a new epoch) are *topic duplicates*: the fold must drop
    each as a ``duplicate`` (one more in the run's count; counted, not a violation,
    DESIGN.md §5), so they are added to what the run's state must show. ``duplicated``
    counts what was *folded* twice: applied events or violations beyond the truth.

    A run with events missing from the topic (never acknowledged) must fold to what is
    there without applying anything twice; with ``tails_only`` (a killed producer) the
    missing events must be a tail: what is there is a prefix, and ``last_seq`` its length.
    """
    m = Measurement()
    sent_events: dict[str, set[int]] = {}
    sent_count: dict[str, Counter[int]] = {}
    for run_id, seq, fault in truth.sent:
        if seq is not None:
            sent_count.setdefault(run_id, Counter())[seq] += 1
            if fault is None:
                sent_events.setdefault(run_id, set()).add(seq)
    by_run_violations: dict[str, list[tuple[str, int, int]]] = {}
    for v in folded.violations:
        by_run_violations.setdefault(str(v.run_id), []).append(
            (v.kind.value, v.first_seq, v.last_seq)
        )
    expected = {entry["run_id"]: entry for entry in truth.manifest["runs"]}
    for run_id, entry in expected.items():
        on = on_topic.seqs.get(run_id, [])
        distinct = set(on)
        wanted = sent_events.get(run_id, set())
        m.lost += sum(1 for seq in wanted - distinct if must_be_present(run_id, seq))
        copies = Counter(on) - sent_count.get(run_id, Counter())
        m.topic_duplicates += sum(copies.values())
        state = folded.runs.get(run_id)
        firsts = list(dict.fromkeys(on))
        if not entry["faults"] and firsts != sorted(firsts):
            m.order_violations += 1
        if wanted <= distinct:
            if state is None:
                m.state_mismatches.append(f"{run_id}: missing from agent-runs")
                continue
            _compare_state(m, run_id, entry, state, copies, by_run_violations.get(run_id, []))
            continue
        present = sorted(distinct & wanted)
        m.partial_runs += 1 if present else 0
        if state is None:
            if present:
                m.state_mismatches.append(f"{run_id}: {len(present)} events, no state")
            continue
        if state.events_applied > len(present):
            m.duplicated += state.events_applied - len(present)
        if state.duplicates > sum(copies.values()):
            m.duplicated += state.duplicates - sum(copies.values())
        if tails_only:
            if present != list(range(1, len(present) + 1)):
                m.order_violations += 1
                m.state_mismatches.append(f"{run_id}: on topic {present[:5]}.. not a prefix")
            elif state.last_seq != len(present):
                m.state_mismatches.append(f"{run_id}: last_seq {state.last_seq} != {len(present)}")
    unknown = set(folded.runs) - set(expected)
    if unknown:
        m.state_mismatches.append(f"{len(unknown)} runs folded that the fleet never sent")
    want_dlq = sum(1 for _, _, fault in truth.sent if fault == "corrupt")
    if m.partial_runs == 0 and len(folded.dlq) != want_dlq:
        m.state_mismatches.append(f"DLQ has {len(folded.dlq)} records, truth says {want_dlq}")
    return m


def _compare_state(
    m: Measurement,
    run_id: str,
    entry: Mapping[str, Any],
    state: Any,
    copies: Counter[int],
    violations: list[tuple[str, int, int]],
) -> None:
    """A run whose every event reached Kafka: its state must be the manifest's (plus the
    producer's extra copies, each a dropped duplicate)."""
    got = json.loads(state.run.to_json())
    if got != entry["run"]:
        m.state_mismatches.append(f"{run_id}: run {got} != {entry['run']}")
    if state.events_applied != entry["applied"]:
        m.state_mismatches.append(f"{run_id}: applied {state.events_applied} != {entry['applied']}")
        m.duplicated += max(0, state.events_applied - entry["applied"])
    want_dups = entry["duplicates"] + sum(copies.values())
    if state.duplicates != want_dups:
        m.state_mismatches.append(f"{run_id}: duplicates {state.duplicates} != {want_dups}")
        m.duplicated += max(0, state.duplicates - want_dups)
    got_v, want_v = sorted(violations), sorted(_expected_violations(entry))
    if got_v != want_v:
        extra = Counter(got_v) - Counter(want_v)
        m.duplicated += sum(n for v, n in extra.items() if v in want_v)
        m.order_violations += sum(n for v, n in extra.items() if v not in want_v)
        m.state_mismatches.append(f"{run_id}: violations {got_v[:6]} != {want_v[:6]}")


def summary(m: Measurement, limit: int = 5) -> str:
    """A short text of a measurement, for assertion messages."""
    return (
        f"lost={m.lost} duplicated={m.duplicated} order={m.order_violations} "
        f"topic_duplicates={m.topic_duplicates} partial_runs={m.partial_runs} "
        f"mismatches({len(m.state_mismatches)})={m.state_mismatches[:limit]}"
    )
