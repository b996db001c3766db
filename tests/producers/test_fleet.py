"""The fleet simulator: determinism, realistic shape, each fault's effect, and the manifest."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consumers import fold
from producers import Fleet, FleetConfig, RecordMeta
from producers.fleet import DEFAULT_START, default_gap_delay_ms
from schemas import Event, RunStatus
from schemas.errors import ConfigError, DecodeError

pytestmark = pytest.mark.unit

FleetRecords = list[tuple[bytes, bytes, RecordMeta]]
MakeFleet = Callable[..., tuple[Fleet, FleetRecords]]
Codec = Any  # conftest's Codec: .encode(event) -> bytes, .decode(bytes) -> Event


def decodable(codec: Codec, value: bytes) -> bool:
    """True when ``value`` decodes as an event."""
    try:
        codec.decode(value)
    except DecodeError:
        return False
    return True

TERMINAL = {"graph_completed", "graph_failed"}


def events_by_run(codec: Codec, records: FleetRecords) -> dict[str, list[Event]]:
    """Decoded events of each run, in stream order (corrupt records skipped)."""
    runs: dict[str, list[Event]] = defaultdict(list)
    for key, value, meta in records:
        if meta.fault != "corrupt":
            event = codec.decode(value)
            assert key == str(event.run_id).encode()
            runs[key.decode()].append(event)
    return runs


def is_terminal(event: Event) -> bool:
    kind = event.kind
    return kind.type in TERMINAL or (
        kind.type == "graph_interrupted" and kind.reason == "cancelled"  # type: ignore[union-attr]
    )


def test_same_seed_gives_the_same_records_byte_for_byte(make_fleet: MakeFleet) -> None:
    options: dict[str, Any] = {"runs": 60, "agents": 5, "seed": 11,
                               "faults": "gap=0.2,dup=0.2,reorder=0.2,after_end=0.2,"
                                         "conflict=0.2,corrupt=0.2"}
    fleet_a, first = make_fleet(**options)
    fleet_b, second = make_fleet(**options)
    assert first == second
    assert fleet_a.manifest() == fleet_b.manifest()
    _, other = make_fleet(**{**options, "seed": 12})
    assert {k for k, _, _ in other}.isdisjoint({k for k, _, _ in first})


def test_runs_look_like_real_runs(make_fleet: MakeFleet, codec: Codec) -> None:
    fleet, records = make_fleet(runs=120, agents=6, seed=3)
    runs = events_by_run(codec, records)
    assert len(runs) == 120
    statuses = set()
    kinds = set()
    for events in runs.values():
        seqs = [e.seq for e in events]
        assert seqs == list(range(1, len(events) + 1)), "no faults: in order, no gap"
        assert 5 <= len(events) <= 80
        assert events[0].kind.type == "graph_started"
        assert set(events[0].payload) == {  # type: ignore[arg-type]
            "agent_spec_digest", "git_sha", "inputs", "graph_name", "entry_point"}
        assert is_terminal(events[-1])
        assert not any(is_terminal(e) for e in events[:-1])
        stamps = [int(e.timestamp) for e in events]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert stamps[0] > int(DEFAULT_START)
        statuses.add(events[-1].kind.type)
        kinds.update(e.kind.type for e in events)
    assert statuses == {"graph_completed", "graph_failed", "graph_interrupted"}
    # Interrupted-then-resumed runs and the usual node/tool/message/state/checkpoint mix.
    assert {"node_entered", "node_exited", "tool_called", "tool_returned", "message_added",
            "state_updated", "checkpoint_saved", "checkpoint_restored", "graph_interrupted",
            "node_retrying"} <= kinds


def test_agents_run_in_parallel(make_fleet: MakeFleet) -> None:
    _, records = make_fleet(runs=40, agents=4, seed=5)
    first_seen: dict[bytes, int] = {}
    last_seen: dict[bytes, int] = {}
    for position, (key, _, _) in enumerate(records):
        first_seen.setdefault(key, position)
        last_seen[key] = position
    # With 4 agents, runs overlap: some run starts before another one ends.
    spans = sorted((first_seen[k], last_seen[k]) for k in first_seen)
    overlapping = sum(1 for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1])
    assert overlapping >= 10


def faults_of(records: FleetRecords, fault: str) -> list[RecordMeta]:
    return [meta for _, _, meta in records if meta.fault == fault]


def test_gap_drops_one_middle_seq_and_stamps_past_the_reorder_bound(
    make_fleet: MakeFleet, codec: Codec
) -> None:
    fleet, records = make_fleet(runs=30, seed=1, faults="gap=1")
    delay_ns = fleet.config.gap_delay_ms * 1_000_000
    assert fleet.config.gap_delay_ms == default_gap_delay_ms() > 60_000
    for events in events_by_run(codec, records).values():
        seqs = [e.seq for e in events]
        n = seqs[-1]
        missing = sorted(set(range(1, n + 1)) - set(seqs))
        assert len(missing) == 1 and 2 <= missing[0] <= n - 3
        gap = missing[0]
        stamp = {e.seq: int(e.timestamp) for e in events}
        assert stamp[gap + 1] - stamp[gap - 1] >= delay_ns
        assert stamp[gap + 2] - stamp[gap + 1] >= delay_ns


def test_dup_resends_identical_bytes_after_the_next_seq(make_fleet: MakeFleet) -> None:
    _, records = make_fleet(runs=30, seed=2, faults="dup=1")
    assert len(faults_of(records, "dup")) == 30
    for index, (key, value, meta) in enumerate(records):
        if meta.fault == "dup":
            earlier = [(v, m) for k, v, m in records[:index] if k == key]
            original = [v for v, m in earlier if m.seq == meta.seq and m.fault is None]
            assert original == [value]
            assert earlier[-1][1].seq == meta.seq + 1  # type: ignore[operator]


def test_reorder_swaps_two_adjacent_events_back_to_back(make_fleet: MakeFleet,
                                                        codec: Codec) -> None:
    _, records = make_fleet(runs=30, seed=4, faults="reorder=1")
    for events in events_by_run(codec, records).values():
        seqs = [e.seq for e in events]
        inversions = [i for i in range(len(seqs) - 1) if seqs[i] > seqs[i + 1]]
        assert len(inversions) == 1
        i = inversions[0]
        assert seqs[i] == seqs[i + 1] + 1
        assert sorted(seqs) == list(range(1, len(seqs) + 1))
    # The swapped pair travels together: nothing of another run between them.
    keys = [k for k, _, _ in records]
    for i in range(len(records) - 1):
        a, b = records[i][2], records[i + 1][2]
        if a.run_id == b.run_id and a.seq and b.seq and a.seq == b.seq + 1:
            assert keys[i - 1] == keys[i]


def test_after_end_sends_seq_n_plus_one_after_the_terminal_event(make_fleet: MakeFleet,
                                                                 codec: Codec) -> None:
    _, records = make_fleet(runs=20, seed=6, faults="after_end=1")
    for events in events_by_run(codec, records).values():
        assert is_terminal(events[-2])
        assert events[-1].seq == events[-2].seq + 1


def test_conflict_resends_a_used_seq_with_other_content(make_fleet: MakeFleet,
                                                        codec: Codec) -> None:
    _, records = make_fleet(runs=20, seed=7, faults="conflict=1")
    for events in events_by_run(codec, records).values():
        by_seq: dict[int, list[Event]] = defaultdict(list)
        for event in events:
            by_seq[event.seq].append(event)
        twice = [s for s, found in by_seq.items() if len(found) == 2]
        assert len(twice) == 1
        original, other = by_seq[twice[0]]
        assert original != other


def test_corrupt_records_carry_the_run_key_and_do_not_decode(make_fleet: MakeFleet,
                                                             codec: Codec) -> None:
    _, records = make_fleet(runs=40, seed=8, faults="corrupt=1")
    corrupt = [(k, v) for k, v, m in records if m.fault == "corrupt"]
    assert len(corrupt) == 40
    run_keys = {k for k, _, m in records if m.fault is None}
    for key, value in corrupt:
        assert key in run_keys
        assert not decodable(codec, value)


def test_manifest_without_faults(make_fleet: MakeFleet, tmp_path: Path) -> None:
    fleet, records = make_fleet(runs=25, agents=3, seed=9)
    manifest = fleet.manifest()
    totals = manifest["totals"]
    assert totals["runs"] == 25
    assert totals["records"] == totals["events"] == totals["applied"] == len(records)
    assert totals["dlq"] == totals["duplicates"] == totals["violations"] == 0
    for entry in manifest["runs"]:
        assert entry["violations"] == [] and entry["applied"] == entry["events"]
        run = entry["run"]
        assert run["run_id"] == entry["run_id"]
        assert (run["finished_at"] is None) == (run["status"] == "RUNNING")
        assert (run["outputs"] is not None) == (run["status"] == "COMPLETED")
    path = fleet.write_manifest(tmp_path / "m.json")
    assert json.loads(path.read_text()) == manifest


def test_manifest_matches_what_the_fold_computes(make_fleet: MakeFleet, codec: Codec) -> None:
    """The manifest is the simulator's own prediction; the pure fold must agree with it."""
    fleet, records = make_fleet(
        runs=150, agents=7, seed=21,
        faults="gap=0.4,dup=0.4,reorder=0.4,after_end=0.4,conflict=0.4,corrupt=0.4")
    manifest = fleet.manifest()
    decoded = [codec.decode(v) for _, v, m in records if m.fault != "corrupt"]
    result = fold(decoded)
    assert result.pending_total == 0
    assert len(result.runs) == manifest["totals"]["runs"] == 150
    assert manifest["totals"]["dlq"] == len(records) - len(decoded) > 0
    for entry in manifest["runs"]:
        state = next(s for s in result.runs.values() if str(s.run_id) == entry["run_id"])
        assert json.loads(state.run.to_json()) == entry["run"]
        reported = [{"kind": v.kind.value, "first_seq": v.first_seq, "last_seq": v.last_seq}
                    for v in state.violations]
        assert sorted(reported, key=lambda v: (v["first_seq"], v["kind"])) == entry["violations"]
        counters = state.counters()
        assert {name: counters[name] for name in entry["counters"]} == entry["counters"]
    assert sum(len(e["faults"]) for e in manifest["runs"]) > 250


def test_the_manifest_needs_every_record_generated(codec: Codec) -> None:
    fleet = Fleet(FleetConfig(runs=3), encode=codec.encode)
    with pytest.raises(ConfigError, match="only after every record"):
        fleet.manifest()


@pytest.mark.parametrize(
    ("options", "message"),
    [({"runs": -1}, "runs=-1"), ({"runs": 1, "agents": 0}, "agents=0"),
     ({"runs": 1, "gap_delay_ms": 0}, "gap_delay_ms=0")],
)
def test_fleet_config_is_checked(options: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FleetConfig(**options)


def test_statuses_follow_the_rates(make_fleet: MakeFleet) -> None:
    fleet, _ = make_fleet(runs=250, seed=13)
    totals = fleet.manifest()["totals"]
    assert 10 <= totals["status.FAILED"] <= 45  # rate 0.1
    assert 3 <= totals["status.CANCELLED"] <= 28  # rate 0.05
    assert totals["status.COMPLETED"] + totals["status.FAILED"] + totals[
        "status.CANCELLED"] == 250
    assert RunStatus.CANCELLED.is_terminal


class CountingSink:
    """The producer seam ``produce_fleet`` needs: ``produce(key, value)`` and ``flush()``."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    def produce(self, key: bytes, value: bytes) -> None:
        self.records.append((key, value))

    def flush(self, timeout: float) -> str:
        return f"flushed {len(self.records)}"


def test_produce_fleet_sends_everything_reports_progress_and_keeps_the_rate(
    codec: Codec, tmp_path: Path
) -> None:
    import time

    from producers import produce_fleet

    fleet = Fleet(FleetConfig(runs=30, seed=3), encode=codec.encode)
    sink = CountingSink()
    progress: list[int] = []
    started = time.monotonic()
    result = produce_fleet(fleet, sink, rate=4000, on_record=progress.append,
                           manifest_path=tmp_path / "m.json")
    elapsed = time.monotonic() - started
    records = fleet.manifest()["totals"]["records"]
    assert result.records == len(sink.records) == records
    assert result.report == f"flushed {records}"
    assert elapsed >= (records - 100) / 4000  # paced, give or take one pacing step
    assert progress[-1] == records and progress == sorted(progress)
    assert json.loads((tmp_path / "m.json").read_text())["totals"]["records"] == records
    with pytest.raises(ConfigError, match="rate=0"):
        produce_fleet(Fleet(FleetConfig(runs=1), encode=codec.encode), sink, rate=0)


class BulkSink(CountingSink):
    """A sink with EventProducer's bulk loop: produce_fleet hands it the records at once."""

    def __init__(self) -> None:
        super().__init__()
        self.bulk_calls = 0

    def produce_many(self, records: Any, *, on_progress: Any = None) -> int:
        self.bulk_calls += 1
        for record in records:
            self.produce(record[0], record[1])
            if on_progress is not None and len(self.records) % 500 == 0:
                on_progress(len(self.records))
        return len(self.records)


def test_produce_fleet_hands_unpaced_records_to_produce_many() -> None:
    from producers import produce_fleet

    config = FleetConfig(runs=40, seed=5)
    expected = [(key, value) for key, value, _ in Fleet(config).records()]
    bulk = BulkSink()
    progress: list[int] = []
    result = produce_fleet(Fleet(config), bulk, on_record=progress.append)
    assert bulk.bulk_calls == 1 and bulk.records == expected
    assert result.records == len(expected) and progress[-1] == len(expected)
    paced = BulkSink()
    produce_fleet(Fleet(config), paced, rate=1_000_000)
    assert paced.bulk_calls == 0 and paced.records == expected  # pacing needs one at a time
