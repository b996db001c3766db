"""The origin ledger's replay digest, so a run folded here can be checked against it.

The origin (DESIGN.md §1) hashes a run's events in the ledger shape
``{"seq","kind","payload","timestamp"}``, ``kind`` being the ``type`` tag
only, as one compact serde JSON array in ``seq`` order, with SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from schemas import serde
from schemas.model import Event

__all__ = ["ledger_json", "replay_digest"]


def ledger_json(events: Iterable[Event]) -> str:
    """The compact serde JSON array the digest is taken over (events sorted by ``seq``)."""
    entries = [
        f'{{"seq":{event.seq},"kind":{serde.quote(event.kind.type)},'
        f'"payload":{serde.dumps(event.payload)},"timestamp":"{event.timestamp.isoformat()}"}}'
        for event in sorted(events, key=lambda event: event.seq)
    ]
    return "[" + ",".join(entries) + "]"


def replay_digest(events: Iterable[Event]) -> str:
    """SHA-256 hex of :func:`ledger_json` of ``events``: the origin's replay digest."""
    return hashlib.sha256(ledger_json(events).encode()).hexdigest()
