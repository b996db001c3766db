"""The accounting of outcomes: every event handed to the fold ends in exactly one place.

One :class:`Tally` counts for the library fold (:class:`~consumers.runs.FoldResult`) and,
extended by :class:`~consumers.service.ServiceStats`, for the folding service, so both
count the same outcome the same way. The identity (DESIGN.md §5)::

    consumed == applied + duplicate + violation + pending
    pending  == buffered - released

``applied`` and ``violation`` include the events released from a reorder buffer; each
such release is also counted in ``released``, so an event buffered once and applied
later moves from ``pending`` to ``applied``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from consumers.state import Outcome, OutcomeKind

__all__ = ["Tally"]

_APPLIED = OutcomeKind.APPLIED
_BUFFERED = OutcomeKind.BUFFERED
_DUPLICATE = OutcomeKind.DUPLICATE


@dataclass
class Tally:
    """Counts of outcomes, to check that every consumed event is accounted for once."""

    consumed: int = 0
    """Events handed to the fold."""
    applied: int = 0
    """Events folded into their run, on arrival or released from a buffer."""
    duplicate: int = 0
    """Events dropped as a repeat of one applied or buffered at the same seq."""
    violation: int = 0
    """Events not applied because of the violation they carry, on arrival or released."""
    buffered: int = 0
    """Events held in a reorder buffer on arrival."""
    released: int = 0
    """Buffered events resolved later (each also counted in ``applied`` or ``violation``)."""

    def add(self, outcomes: Iterable[Outcome], consumed: int = 1) -> None:
        """Count the outcomes of ``consumed`` events (one call of the fold)."""
        self.consumed += consumed
        for outcome in outcomes:
            kind = outcome.kind
            if kind is _APPLIED:
                self.applied += 1
            elif kind is _BUFFERED:
                self.buffered += 1
            elif kind is _DUPLICATE:
                self.duplicate += 1
            else:
                self.violation += 1
            if outcome.released:
                self.released += 1

    def add_applied(self, count: int) -> None:
        """Count ``count`` events consumed and applied with nothing else to tell
        (what the service's batch lane folds)."""
        self.consumed += count
        self.applied += count

    @property
    def pending(self) -> int:
        """Events buffered and not yet released."""
        return self.buffered - self.released

    def balanced(self, pending_total: int | None = None) -> bool:
        """``consumed == applied + duplicate + violation + pending``; when
        ``pending_total`` (events now in the reorder buffers) is given, ``pending`` equals it."""
        if pending_total is not None and self.pending != pending_total:
            return False
        folded = self.applied + self.duplicate + self.violation + self.pending
        return self.consumed == folded + self.not_folded()

    def not_folded(self) -> int:
        """Events consumed that never reached the fold (0 here; the service has some)."""
        return 0
