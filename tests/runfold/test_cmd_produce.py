"""``runfold produce``: bad input, and a faulty fleet through a real broker that the fold
(reading the topic back) judges exactly as the manifest predicts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from consumers import fold
from runfold.cli import main
from schemas import Event
from schemas.codec import EventCodec
from schemas.errors import DecodeError


@pytest.mark.unit
@pytest.mark.parametrize(
    ("faults", "named"),
    [("gap=0.1,lag=0.2", "item 2 ('lag=0.2'): unknown fault 'lag'"),
     ("dup", "item 1 ('dup') has no '='"),
     ("corrupt=3", "3 is not a probability")],
)
def test_bad_faults_text_is_refused_naming_the_item(faults: str, named: str) -> None:
    result = CliRunner().invoke(main, ["produce", "--runs", "1", "--faults", faults,
                                       "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert "Invalid value for '--faults'" in result.output
    assert named in result.output


@pytest.mark.integration
def test_produce_a_faulty_fleet_and_the_fold_agrees_with_the_manifest(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path,
    read_topic: Callable[..., list[tuple[int, bytes, bytes]]],
) -> None:
    topic = topic_factory(partitions=3)
    manifest_path = tmp_path / "m.json"
    result = CliRunner().invoke(main, [
        "produce", "--runs", "200", "--agents", "6", "--seed", "5", "--no-ensure-topics",
        "--faults", "gap=0.2,dup=0.2,reorder=0.2,after_end=0.2,conflict=0.2,corrupt=0.2",
        "--manifest", str(manifest_path), "--bootstrap", kafka_bootstrap, "--topic", topic,
    ])
    assert result.exit_code == 0, result.output
    manifest = json.loads(manifest_path.read_text())
    totals = manifest["totals"]
    assert f"delivered={totals['records']} failed=0 indeterminate=0 pending=0" in result.output
    assert "events/s" in result.output

    records = read_topic(topic, totals["records"])
    assert len(records) == totals["records"]
    codec = EventCodec()
    events: list[Event] = []
    dlq = 0
    for _, _key, value in records:
        try:
            events.append(codec.decode(value))
        except DecodeError:
            dlq += 1
    assert dlq == totals["dlq"] > 0
    states = {str(run_id): state for run_id, state in fold(events).runs.items()}
    for entry in manifest["runs"]:
        state = states[entry["run_id"]]
        assert json.loads(state.run.to_json()) == entry["run"]
        reported = sorted(({"kind": v.kind.value, "first_seq": v.first_seq,
                            "last_seq": v.last_seq} for v in state.violations),
                          key=lambda v: (v["first_seq"], v["kind"]))
        assert reported == entry["violations"], entry["run_id"]
        assert state.events_applied == entry["applied"]
