"""The run-memory benchmark runs, and an open short run stays within the issue's 1 KiB
once paged out, and under the 2 KiB a decoded one cost less than half of before."""

from __future__ import annotations

import pytest

from bench.run_memory import measure

pytestmark = pytest.mark.unit


def test_an_open_short_run_costs_under_a_kib_paged_out() -> None:
    result = measure(2_000)
    assert result["runs"] == 2_000
    assert result["packed_bytes_per_run"] < 1024
    assert result["decoded_bytes_per_run"] < 2048  # 3.3 KiB before the compact RunState
    assert result["library_state_bytes_per_run"] < 1024  # 2.2 KiB before
