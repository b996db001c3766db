"""The marker-memory benchmark runs and its table stays within the issue's bound."""

from __future__ import annotations

import pytest

from bench.marker_memory import measure

pytestmark = pytest.mark.unit


def test_markers_cost_less_than_100_bytes_each() -> None:
    result = measure(50_000)
    assert result["markers"] == 50_000
    assert result["traced_bytes_per_marker"] < 100
    assert result["table_bytes_per_marker"] < 100
