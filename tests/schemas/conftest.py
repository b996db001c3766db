"""Factories for the contract's tests (strategies live in ``schema_strategies.py``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from schemas import Event, NodeEntered, Run, RunStatus, Timestamp

RUN_ID = uuid.UUID("6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b")


@pytest.fixture
def event_factory() -> Callable[..., Event]:
    """Build an Event with sensible defaults; override any field by keyword."""

    def make(**overrides: Any) -> Event:
        fields: dict[str, Any] = {
            "run_id": RUN_ID,
            "seq": 1,
            "timestamp": Timestamp(1_714_564_800_123_456_789),
            "kind": NodeEntered(node_id="planner", iteration=1),
            "payload": {"note": "hello"},
        }
        fields.update(overrides)
        return Event(**fields)

    return make


@pytest.fixture
def run_factory() -> Callable[..., Run]:
    """Build a Run with sensible defaults; override any field by keyword."""

    def make(**overrides: Any) -> Run:
        fields: dict[str, Any] = {
            "run_id": RUN_ID,
            "agent_spec_digest": "sha256:abc",
            "git_sha": "0123abcd",
            "started_at": Timestamp(1_714_564_800_000_000_000),
            "status": RunStatus.RUNNING,
            "inputs": {"question": "What is 2+2?"},
        }
        fields.update(overrides)
        return Run(**fields)

    return make
