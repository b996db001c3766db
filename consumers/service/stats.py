"""Counters of the folding service, kept so that every consumed record is accounted for.

The identity the tests check (DESIGN.md §5, "every consumed record ends in
exactly one place"), the fold's own (:class:`~consumers.tally.Tally`) plus the
records that never reached the fold::

    consumed == applied + duplicate + violation + pending + dlq + replayed
    pending  == buffered - released

- ``applied``, ``duplicate``, ``violation``, ``buffered``, ``released``: the fold's
  outcomes, counted by the same :meth:`~consumers.tally.Tally.add` as the library
  fold (a buffered event released later counts once in ``buffered`` and once in
  ``applied`` or ``violation`` plus ``released``),
- ``dlq``: sent to the dead-letter topic (undecodable, bad key, rejected by the fold),
- ``replayed``: at-least-once only: the record was already folded into its run
  before a crash (its offset ≤ the run's ``source_offset``) and is skipped. Always 0
  in exactly-once mode.

Counters only move when a transaction commits (exactly-once) or offsets are
committed (at-least-once): the records of an aborted transaction are consumed
again and must not be counted twice.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields

from consumers.tally import Tally

__all__ = ["ServiceStats"]


@dataclass
class ServiceStats(Tally):
    """What the service did; see the module docstring for the accounting identity."""

    dlq: int = 0
    replayed: int = 0
    violations_emitted: int = 0
    runs_written: int = 0
    transactions: int = 0
    aborts: int = 0
    restores: int = 0
    restored_runs: int = 0
    rebalances: int = 0
    recoveries: int = 0
    """Client rebuilds after a failure that was neither fencing nor permanent (a broker
    failover, a fatal idempotent-producer error): the service went on in the process."""
    markers_made: int = 0
    """Finished runs shrunk to a marker after their grace (a RunMarker record written)."""
    markers_forgotten: int = 0
    """Markers forgotten after their retention (a tombstone written)."""
    markers_shed: int = 0
    """Markers dropped early, oldest first, over ``max_markers`` (a tombstone written)."""
    marker_events: int = 0
    """Events of runs known by their marker (counted as duplicate or violation too)."""
    forgotten_run_events: int = 0
    """Events of forgotten runs (``forgotten_run`` violations, counted as violation too)."""
    runs_paged_out: int = 0
    """Idle RUNNING runs paged out to packed bytes over ``max_active_runs``."""
    forced_flushes: int = 0
    """Reorder buffers flushed over ``max_buffered_events`` (their gaps declared)."""
    stalled_flagged: int = 0
    """Runs flagged ``stalled`` (no event for ``stall_after``, :mod:`consumers.stall`). A
    flag consumes no record: it is outside the identity above."""
    dlq_reasons: Counter[str] = field(default_factory=Counter)

    def not_folded(self) -> int:
        """Records sent to the DLQ or skipped as replayed: consumed, never folded."""
        return self.dlq + self.replayed

    def merge(self, other: ServiceStats) -> None:
        """Add ``other``'s counters into this one (a committed transaction's share)."""
        for f in fields(self):
            if f.name == "dlq_reasons":
                self.dlq_reasons.update(other.dlq_reasons)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int | dict[str, int]]:
        """A JSON-ready snapshot, with ``pending`` (the identity's, ``buffered - released``)."""
        out: dict[str, int | dict[str, int]] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = dict(value) if isinstance(value, Counter) else value
        out["pending"] = self.pending
        return out
