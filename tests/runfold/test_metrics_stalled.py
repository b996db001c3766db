"""The stalled-run metrics: a counter of runs flagged and a gauge of runs stalled now."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest

from consumers.service.stats import ServiceStats
from runfold.metrics import ServiceCollector


@pytest.mark.unit
def test_stalled_runs_are_counted_and_gauged() -> None:
    service = SimpleNamespace(
        stats=ServiceStats(stalled_flagged=3), _stalls=SimpleNamespace(stalled=2)
    )
    collector = ServiceCollector(service)
    staged: Counter[tuple[int, str]] = Counter()
    collector.stage_violation(0, "stalled", staged)
    collector.commit_violations(0, staged)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collector.collect()
        for sample in family.samples
    }
    assert samples[("runfold_consumer_stalled_flagged_total", ())] == 3
    assert samples[("runfold_consumer_runs_stalled", ())] == 2
    assert samples[("runfold_consumer_violations_total", (("kind", "stalled"),))] == 1
    service._stalls.stalled = 0  # an event resumed them
    gauge = [f for f in collector.collect() if f.name == "runfold_consumer_runs_stalled"]
    assert gauge[0].samples[0].value == 0
