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
) -> Measurement:
    """Lost, duplicated, out of order, and folded state vs truth.

    ``must_be_present(run_id, seq)`` says which sent events had to reach Kafka (all of them
    unless the producer was killed: then only the acknowledged ones). A run whose events
    are not all on the topic (an indeterminate tail) must fold to exactly the prefix
    that is there: ``last_seq`` = its length, nothing applied twice.
    """
    m = Measurement()
    sent_events: dict[str, set[int]] = {}
    for run_id, seq, fault in truth.sent:
        if seq is not None and fault is None:
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
        # Kafka: every acknowledged event present; nothing written twice beyond the
        # fleet's own deliberate duplicates; each run's seqs in send order.
        m.lost += sum(1 for seq in wanted - distinct if must_be_present(run_id, seq))
        complete = wanted <= distinct
        state = folded.runs.get(run_id)
        if complete:
            if state is None:
                m.state_mismatches.append(f"{run_id}: missing from agent-runs")
                continue
            got = json.loads(state.run.to_json())
            if got != entry["run"]:
                m.state_mismatches.append(f"{run_id}: run {got} != {entry['run']}")
            if state.events_applied != entry["applied"]:
                m.state_mismatches.append(
                    f"{run_id}: applied {state.events_applied} != {entry['applied']}"
                )
            if state.duplicates > entry["duplicates"]:
                m.duplicated += state.duplicates - entry["duplicates"]
            if state.duplicates != entry["duplicates"]:
                m.state_mismatches.append(
                    f"{run_id}: duplicates {state.duplicates} != {entry['duplicates']}"
                )
            got_v = sorted(by_run_violations.get(run_id, []))
            want_v = _expected_violations(entry)
            if got_v != want_v:
                extra = Counter(got_v) - Counter(want_v)
                m.duplicated += sum(n for v, n in extra.items() if v in want_v)
                m.order_violations += sum(n for v, n in extra.items() if v not in want_v)
                m.state_mismatches.append(f"{run_id}: violations {got_v} != {want_v}")
        else:
            # A tail never reached Kafka (indeterminate): the fold holds the prefix.
            present = sorted(distinct & wanted)
            m.partial_runs += 1 if present else 0
            prefix = list(range(1, len(present) + 1))
            if present != prefix:
                m.order_violations += 1
                m.state_mismatches.append(f"{run_id}: on topic {present[:5]}.. not a prefix")
            if present and (state is None or state.last_seq != len(present)):
                m.state_mismatches.append(
                    f"{run_id}: last_seq {state.last_seq if state else None} != {len(present)}"
                )
            if state is not None and state.duplicates:
                m.duplicated += state.duplicates
        # Order on the topic: a fault-free run's seqs must appear increasing (reorder
        # faults are deliberate and excluded by the caller choosing fault-free fleets).
        firsts = list(dict.fromkeys(on))
        if not entry["faults"] and firsts != sorted(firsts):
            m.order_violations += 1
        if not entry["faults"] and len(on) > len(distinct):
            m.duplicated += len(on) - len(distinct)
    unknown = set(folded.runs) - set(expected)
    if unknown:
        m.state_mismatches.append(f"{len(unknown)} runs folded that the fleet never sent")
    want_dlq = sum(
        1 for run_id, seq, fault in truth.sent if fault == "corrupt" and must_be_present(run_id, -1)
    )
    if len(folded.dlq) != want_dlq and all(
        set(sent_events.get(r, set())) <= set(on_topic.seqs.get(r, [])) for r in expected
    ):
        m.state_mismatches.append(f"DLQ has {len(folded.dlq)} records, truth says {want_dlq}")
    return m


def summary(m: Measurement, limit: int = 5) -> str:
    """A short text of a measurement, for assertion messages."""
    return (
        f"lost={m.lost} duplicated={m.duplicated} order={m.order_violations} "
        f"partial_runs={m.partial_runs} mismatches({len(m.state_mismatches)})="
        f"{m.state_mismatches[:limit]}"
    )
