"""``runfold demo``: end to end on the real broker (shortened), and its summary logic."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]
from user_day_fixtures import EVERY_FAULT, expected_statuses, expected_violations, send_fleet

from clients.settings import RunfoldSettings, TopicNames
from runfold.cli import main
from runfold.demo_summary import DemoSummary, check, next_steps, render_summary


@pytest.fixture
def demo_prefix(kafka_admin: AdminClient) -> Iterator[str]:
    """A unique topic prefix; the demo creates the topics, the fixture deletes them."""
    prefix = f"test-demo-{uuid.uuid4().hex[:8]}-"
    yield prefix
    kafka_admin.delete_topics(TopicNames().prefixed(prefix).all(), operation_timeout=10)


def test_demo_end_to_end_matches_the_manifest(
    kafka_bootstrap: str, demo_prefix: str, tmp_path: Path
) -> None:
    summary_path, manifest_path = tmp_path / "summary.json", tmp_path / "manifest.json"
    result = CliRunner().invoke(main, [
        "demo", "--bootstrap-servers", kafka_bootstrap, "--prefix", demo_prefix,
        "--group", demo_prefix + "fold", "--runs", "40", "--agents", "4", "--seed", "11",
        "--faults", EVERY_FAULT, "--rate", "0", "--no-live",
        "--summary-json", str(summary_path), "--manifest", str(manifest_path),
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(summary_path.read_text())
    manifest = json.loads(manifest_path.read_text())
    violations = expected_violations(manifest)
    # The fleet of this seed has every fault the simulator can inject; otherwise the
    # comparison below would prove less than it claims.
    assert set(violations) == {"gap", "conflict", "after_terminal"}  # duplicates: counted
    assert manifest["totals"]["dlq"] > 0

    # The summary's numbers, read back from the output topics, against the ground truth.
    assert summary["runs_by_status"] == expected_statuses(manifest)
    assert {k: v for k, v in summary["violations"].items() if v} == violations
    assert summary["dlq"] == manifest["totals"]["dlq"]
    assert summary["events_applied"] == sum(run["applied"] for run in manifest["runs"])
    assert summary["records_produced"] == sum(run["records"] for run in manifest["runs"])
    assert summary["consumer"]["consumed"] == summary["records_produced"]
    assert summary["mismatches"] == []
    assert summary["broker"] == "external" and not summary["broker_stopped"]
    # Each violation kind names a run of this fleet that really has it.
    by_id = {run["run_id"]: run for run in manifest["runs"]}
    for kind, run_id in summary["example_runs"].items():
        assert kind in {v["kind"] for v in by_id[run_id]["violations"]}
    # What a person reads: the verdict, and how to go further.
    assert "every number matches the simulator's manifest" in result.output
    first_example = next(iter(summary["example_runs"].values()))
    assert f"runfold runs show {first_example} --prefix {demo_prefix}" in result.output
    assert f'runfold sql --prefix {demo_prefix} "SELECT status' in result.output


def test_demo_again_after_a_crashed_one_counts_only_its_own_records(
    kafka_bootstrap: str, demo_prefix: str, tmp_path: Path
) -> None:
    """Same topics, same group: a second demo, after one that crashed mid-way, still matches."""
    common = [
        "demo", "--bootstrap-servers", kafka_bootstrap, "--prefix", demo_prefix,
        "--group", demo_prefix + "fold", "--runs", "30", "--agents", "4",
        "--faults", EVERY_FAULT, "--rate", "0", "--no-live",
    ]
    first = CliRunner().invoke(main, [*common, "--seed", "21"])
    assert first.exit_code == 0, first.output
    # What a demo killed mid-way leaves: records in the events topic the group never
    # folded, some of them poison (dead letters once folded).
    settings = RunfoldSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=demo_prefix)
    leftover, _ = send_fleet(settings, runs=12, seed=22)
    assert leftover["totals"]["dlq"] > 0

    summary_path = tmp_path / "summary.json"
    second = CliRunner().invoke(main, [*common, "--seed", "23", "--summary-json",
                                       str(summary_path)])
    assert second.exit_code == 0, second.output
    assert "every number matches the simulator's manifest" in second.output
    summary = json.loads(summary_path.read_text())
    assert summary["mismatches"] == []
    assert summary["leftover_records"] == leftover["totals"]["records"]
    assert summary["earlier_dlq"] == leftover["totals"]["dlq"]
    # The service folded the leftovers too: its counters are the sum of both.
    consumer = summary["consumer"]
    assert consumer["consumed"] == summary["records_produced"] + leftover["totals"]["records"]
    assert consumer["dlq"] == summary["dlq"] + summary["earlier_dlq"]

    # The same seed again would send runs agent-runs already holds: refused up front.
    again = CliRunner().invoke(main, [*common, "--seed", "23"])
    assert again.exit_code == 1
    assert "the runs of seed 23 are already in" in again.output


def _summary(**changes: object) -> DemoSummary:
    base = DemoSummary(
        bootstrap="b:9092", topics={}, seed=1, runs=3, agents=1, faults="gap=0.1",
        records_produced=30, produce_seconds=1.0, fold_seconds=2.0,
        consumer={"consumed": 30, "transactions": 2, "duplicate": 0, "violation": 0,
                  "released": 0},
        runs_by_status={"RUNNING": 0, "COMPLETED": 3, "FAILED": 0, "CANCELLED": 0},
        expected_runs_by_status={"RUNNING": 0, "COMPLETED": 3, "FAILED": 0, "CANCELLED": 0},
        violations={"gap": 1}, expected_violations={"gap": 1},
        example_runs={"gap": "0f0f0f0f-0000-4000-8000-000000000001"},
        dlq=0, expected_dlq=0, events_applied=29, expected_events_applied=29,
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


@pytest.mark.unit
def test_summary_check_names_every_disagreement() -> None:
    assert check(_summary()) == []
    problems = check(_summary(dlq=2, violations={"gap": 0}))
    assert problems == ["violations: folded {'gap': 0}, manifest {'gap': 1}",
                        "dead letters: folded 2, manifest 0"]


@pytest.mark.unit
def test_summary_render_and_next_steps() -> None:
    from rich.console import Console

    console = Console(record=True, width=120)
    summary = _summary(broker="started", broker_stopped=True)
    console.print(render_summary(summary))
    text = console.export_text()
    assert "every number matches" in text
    assert "gap" in text and "0f0f0f0f-0000-4000-8000-000000000001" in text
    steps = next_steps(summary, "p-")
    assert "runfold kafka up   # the demo stopped its broker" in steps[0]
    assert any("runs show 0f0f0f0f-0000-4000-8000-000000000001 --prefix p-" in s for s in steps)
    bad = _summary(dlq=5)
    bad.mismatches = check(bad)
    console = Console(record=True, width=120)
    console.print(render_summary(bad))
    assert "dead letters: folded 5, manifest 0" in console.export_text()
    # Records a crashed demo left, folded by this one, are named and left out.
    console = Console(record=True, width=200)
    console.print(render_summary(_summary(leftover_records=1234, earlier_dlq=2)))
    text = console.export_text()
    assert "includes 1,234 records an earlier run left unfolded (2 of them dead" in text
    assert "every number matches" in text
