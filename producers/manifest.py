"""The fleet manifest's vocabulary: what each field means and how counters are predicted.

Kept apart from :mod:`producers.fleet` so the rules a consumer is checked against
read in one place.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from producers.runs import FaultPlan

__all__ = ["SEMANTICS", "expected_counters", "violation"]

SEMANTICS = (
    "Per run: 'events' = n distinct seqs sent (1..n, graph_started to terminal); 'records' = "
    "every record sent with the run's key (events, duplicates, conflicts, late and corrupt "
    "records); 'applied' = events the fold applies (all but a gap's missing seq); "
    "'duplicates' = records with the 'duplicate' outcome (counted, not reported as "
    "violations, as consumers/runs.py documents); 'dlq' = corrupt "
    "records; 'violations' = exactly what the consumer reports, as (kind, first_seq, last_seq); "
    "'run' = the final Run as serde JSON (started_at = graph_started's timestamp, finished_at = "
    "the terminal event's, outputs and final_state_digest from graph_completed's payload, "
    "null for failed and cancelled runs); 'counters' = the fold's counters "
    "(consumers.state.COUNTER_NAMES) that the simulator can predict; 'applied_kinds' = applied "
    "events by type tag. A reordered pair produces no violation. A gap's following events "
    "are stamped more than FoldConfig.max_delay_ns apart, so the gap is declared on event "
    "time alone."
)


# Which fold counter (consumers.state.COUNTER_NAMES) each applied event kind bumps.
_COUNTER_OF_KIND = {
    "node_entered": "nodes_entered",
    "node_exited": "nodes_exited",
    "node_failed": "node_failures",
    "tool_called": "tool_calls",
    "tool_returned": "tool_returns",
    "tool_failed": "tool_failures",
    "node_retrying": "retries",
    "checkpoint_saved": "checkpoints_saved",
    "checkpoint_restored": "checkpoints_restored",
    "checkpoint_deleted": "checkpoints_deleted",
    "state_updated": "state_updates",
    "message_added": "messages",
    "graph_interrupted": "interrupts",
}


def expected_counters(applied_kinds: Counter[str], applied: int, duplicates: int,
                      faults: FaultPlan) -> dict[str, int]:
    """The fold's counters for the run, predicted from what was applied and sent."""
    counters = dict.fromkeys(
        ["events_applied", *_COUNTER_OF_KIND.values(), "duplicates", "unverified_duplicates",
         "events_buffered"], 0)
    counters["events_applied"] = applied
    for kind, count in applied_kinds.items():
        name = _COUNTER_OF_KIND.get(kind)
        if name is not None:
            counters[name] += count
    counters["duplicates"] = duplicates
    # A reorder holds seq r+2 until r+1 arrives; a gap holds g+1 and g+2 until the
    # event-time bound declares g missing.
    counters["events_buffered"] = (
        (1 if faults.reorder is not None else 0) + (2 if faults.gap is not None else 0)
    )
    return counters


def violation(kind: str, seq: int) -> dict[str, Any]:
    """One expected violation of a single seq, as the manifest lists it."""
    return {"kind": kind, "first_seq": seq, "last_seq": seq}
