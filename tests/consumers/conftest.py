"""Fixtures for the fold's tests: a run id and a factory of literal events."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

import pytest
from fold_events import RUN_ID, EventFactory, make_event

from schemas import Event


@pytest.fixture
def run_id() -> UUID:
    """The run the factory's events belong to by default."""
    return RUN_ID


@pytest.fixture
def event_factory() -> EventFactory:
    """``event_factory(seq, kind="tool_called", payload=None, *, at=, run_id=, **fields)``."""
    factory: Callable[..., Event] = make_event
    return factory  # type: ignore[return-value]
