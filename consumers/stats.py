"""Counters of the folding service, kept so that every consumed record is accounted for.

The identity the tests check (DESIGN.md §5, "every consumed record ends in
exactly one place")::

    consumed == applied + duplicate + violation + buffered + dlq + replayed

- ``applied``: the record's event advanced its run (``seq == last_seq + 1``),
- ``duplicate``: same seq and content as an event already applied, dropped,
- ``violation``: rejected with a violation (conflict, after_terminal),
- ``buffered``: held in the run's reorder buffer when it was consumed (it is
  applied, or given up as part of a ``gap``, later; that later release is counted
  in ``released``, not again in the identity),
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

__all__ = ["ServiceStats"]


@dataclass
class ServiceStats:
    """What the service did; see the module docstring for the accounting identity."""

    consumed: int = 0
    applied: int = 0
    duplicate: int = 0
    violation: int = 0
    buffered: int = 0
    dlq: int = 0
    replayed: int = 0
    released: int = 0
    violations_emitted: int = 0
    runs_written: int = 0
    transactions: int = 0
    aborts: int = 0
    restores: int = 0
    restored_runs: int = 0
    rebalances: int = 0
    dlq_reasons: Counter[str] = field(default_factory=Counter)

    def balanced(self) -> bool:
        """True when every consumed record is counted in exactly one outcome."""
        return self.consumed == (
            self.applied
            + self.duplicate
            + self.violation
            + self.buffered
            + self.dlq
            + self.replayed
        )

    def merge(self, other: ServiceStats) -> None:
        """Add ``other``'s counters into this one (a committed transaction's share)."""
        for f in fields(self):
            if f.name == "dlq_reasons":
                self.dlq_reasons.update(other.dlq_reasons)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int | dict[str, int]]:
        """A JSON-ready snapshot."""
        out: dict[str, int | dict[str, int]] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = dict(value) if isinstance(value, Counter) else value
        return out
