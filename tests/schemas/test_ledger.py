"""The origin ledger's replay digest, against literal vectors."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from schemas import Event, GraphCompleted, GraphStarted, NodeEntered, Timestamp, replay_digest
from schemas.ledger import ledger_json

pytestmark = pytest.mark.unit

RUN_ID = uuid.UUID("6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b")


def event(seq: int, kind: object, payload: object, nanos: int) -> Event:
    return Event(run_id=RUN_ID, seq=seq, timestamp=Timestamp(nanos), kind=kind, payload=payload)


EVENTS = [
    # Given out of order: the digest sorts by seq.
    event(3, GraphCompleted(iterations=1, duration_ms=20), {"outputs": {"answer": 4}}, 2 * 10**9),
    event(1, GraphStarted(), {"git_sha": "abc", "inputs": {"q": "2+2?"}}, 1_714_564_800 * 10**9),
    event(2, NodeEntered(node_id="planner", iteration=1), {"x": 1.5e-7, "é": None}, 1_500_000),
]

LEDGER = (
    '[{"seq":1,"kind":"graph_started","payload":{"git_sha":"abc","inputs":{"q":"2+2?"}},'
    '"timestamp":"2024-05-01T12:00:00Z"},'
    '{"seq":2,"kind":"node_entered","payload":{"x":1.5e-7,"é":null},'
    '"timestamp":"1970-01-01T00:00:00.001500Z"},'
    '{"seq":3,"kind":"graph_completed","payload":{"outputs":{"answer":4}},'
    '"timestamp":"1970-01-01T00:00:02Z"}]'
)


def test_ledger_json_is_the_compact_serde_array_in_seq_order() -> None:
    assert ledger_json(EVENTS) == LEDGER


def test_replay_digest_is_sha256_of_the_ledger_json() -> None:
    assert replay_digest(EVENTS) == hashlib.sha256(LEDGER.encode()).hexdigest()
    assert replay_digest(EVENTS) == (
        "ed806a362da5291a4c7cf1f55b7b51e9842962ff3d4bf698417bfefda9e13ac9"
    )


def test_empty_run_digest() -> None:
    assert replay_digest([]) == hashlib.sha256(b"[]").hexdigest()
