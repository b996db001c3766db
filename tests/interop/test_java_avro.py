"""Apache Avro's Java library reads what runfold writes, and runfold reads what it writes.

No broker: the messages travel as hex lines through files. Java decodes with
``org.apache.avro.message.BinaryMessageDecoder`` against ``schemas/avro/*.avsc`` (it
checks the ``C3 01`` header and looks the fingerprint up itself) and encodes with
``BinaryMessageEncoder``; runfold uses :mod:`schemas.codec`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import java_support
import pytest
from java_support import (
    ALL_VARIANTS,
    JavaInterop,
    edge_events,
    event_avro_json,
    kind_record_name,
    write_hex_lines,
)

from consumers.fold import fold
from producers.fleet import DEFAULT_START, Fleet, FleetConfig
from schemas import Event, RunStatus, Timestamp, ViolationKind, default_catalog, serde
from schemas.codec import decode_event, encode_event

pytestmark = pytest.mark.interop
java_interop = java_support.java_interop  # the session fixture, shared with test_java_kafka

# The fleet's clock ticks by whole nanoseconds; an odd start adds digits to the very first.
_NANO_START = Timestamp(int(DEFAULT_START) + 123_457)


def _assert_java_saw(line: dict[str, Any], event: Event) -> None:
    """Java's decoding of one message equals the event runfold encoded, field by field."""
    where = f"line {line['line']} ({event.run_id} seq {event.seq})"
    assert line["ok"], f"{where}: Java could not decode: {line.get('error')}"
    assert line["avro"] == event_avro_json(event), where
    assert line["kind_schema"] == kind_record_name(event), where
    assert line["run_id_uuid"] == str(event.run_id), where
    # Java's Instant and chrono print fractions the same way: 3, 6 or 9 digits, or none.
    assert line["timestamp_instant"] == event.timestamp.isoformat(), where
    # Jackson parsed the payload text to the same JSON value (floats as IEEE doubles).
    assert line["payload_jackson"] == event.payload, where
    assert line["reencoded_identical"], f"{where}: Avro re-encodes to other bytes"


def _decode_in_java(java: JavaInterop, tmp_path: Path, events: list[Event]) -> list[dict[str, Any]]:
    messages = [encode_event(event) for event in events]
    out = java.run("decode-events", str(write_hex_lines(tmp_path / "events.hex", messages)))
    summary = out.pop()["summary"]
    assert summary == {"decoded": len(events), "failed": 0, "reencoded_identical": len(events)}
    assert len(out) == len(events)
    return out


def test_java_fingerprints_and_canonical_forms_match_the_catalog(java_interop: JavaInterop) -> None:
    """Avro's SchemaNormalization gives runfold's fingerprint for every kept schema."""
    [java] = java_interop.run("fingerprints")
    catalog = default_catalog()
    assert set(java) == {"Event", "Run", "RunState", "Violation"}
    for name, seen in java.items():
        ours = catalog.current(name)
        assert seen["fullname"] == ours.fullname
        assert seen["version"] == ours.version
        assert seen["canonical_form"] == ours.canonical_form, name
        assert seen["fingerprint_le_hex"] == ours.fingerprint_hex, name


def test_java_decodes_every_event_of_a_fleet_stream(
    java_interop: JavaInterop, tmp_path: Path
) -> None:
    """100 % of a fleet's events, all 16 variants, nanosecond timestamps, equal field by field."""
    fleet = Fleet(FleetConfig(runs=150, seed=11, start=_NANO_START))
    events = [decode_event(value) for _key, value, _meta in fleet.records()]
    assert len(events) > 3000

    lines = _decode_in_java(java_interop, tmp_path, events)

    for line, event in zip(lines, events, strict=True):
        _assert_java_saw(line, event)
    variants = Counter(line["kind_schema"] for line in lines)
    assert set(variants) == ALL_VARIANTS, f"the fleet sent only {sorted(variants)}"
    nanos = sum(1 for e in events if int(e.timestamp) % 1000)
    assert nanos > 0.99 * len(events), "fleet timestamps lack nanosecond digits"


def test_java_decodes_edge_events(java_interop: JavaInterop, tmp_path: Path) -> None:
    """Unicode (astral, U+2028, NUL), floats (subnormal, max, -0.0), u32/i64 extremes, 1969."""
    events = edge_events()
    assert {kind_record_name(e) for e in events} == ALL_VARIANTS
    for line, event in zip(_decode_in_java(java_interop, tmp_path, events), events, strict=True):
        _assert_java_saw(line, event)


def test_avro_json_encoded_by_java_is_byte_identical_to_runfold(
    java_interop: JavaInterop, tmp_path: Path
) -> None:
    """Avro's JSON decoder + BinaryMessageEncoder write exactly runfold's bytes, and back."""
    events = edge_events()
    source = tmp_path / "events.avro.jsonl"
    source.write_text("".join(json.dumps(event_avro_json(e)) + "\n" for e in events))
    encoded = tmp_path / "java.hex"
    [summary] = java_interop.run("encode-json", str(source), str(encoded))
    assert summary == {"summary": {"encoded": len(events)}}
    java_messages = [bytes.fromhex(line) for line in encoded.read_text().split()]
    for event, message in zip(events, java_messages, strict=True):
        assert message == encode_event(event), f"seq {event.seq}: Java wrote other bytes"
        assert decode_event(message) == event


def test_events_built_in_java_decode_and_fold_in_runfold(
    java_interop: JavaInterop, tmp_path: Path
) -> None:
    """Runs a JVM agent would publish (Jackson payloads) fold to the state Java meant."""
    runs = 6
    out_file = tmp_path / "java-runs.tsv"
    [summary] = java_interop.run("encode-events", str(out_file), str(runs), "7")
    assert summary == {"summary": {"runs": runs, "encoded": runs * 15}}

    events: list[Event] = []
    # Not splitlines(): it would also split at the U+2028 inside payloads.
    for text in out_file.read_text(encoding="utf-8").rstrip("\n").split("\n"):
        message_hex, avro_json = text.split("\t")
        event = decode_event(bytes.fromhex(message_hex))
        java_view = json.loads(avro_json)
        mine = event_avro_json(event)
        # Jackson writes 1.0E-7 where serde writes 1e-7: same value, other text.
        assert json.loads(java_view.pop("payload")) == json.loads(mine.pop("payload"))
        assert java_view == mine
        events.append(event)
    assert {kind_record_name(e) for e in events} == ALL_VARIANTS

    result = fold(events)
    assert len(result.runs) == runs
    expected_status = [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED]
    by_run: dict[Any, list[Event]] = {}
    for event in events:
        by_run.setdefault(event.run_id, []).append(event)
    for index, (run_id, run_events) in enumerate(by_run.items()):
        state = result.runs[run_id]
        first, last = run_events[0], run_events[-1]
        assert state.status is expected_status[index % 3], run_id
        assert state.last_seq == 15
        assert state.started_at == first.timestamp
        assert state.finished_at == last.timestamp
        assert state.inputs == first.payload["inputs"]  # type: ignore[index]
        assert state.agent_spec_digest == f"sha256:java-spec-{index}"
        assert not any(state.violation_counts[kind] for kind in ViolationKind), run_id
        assert state.events_applied == 15
        assert (state.tool_calls, state.tool_failures, state.retries, state.interrupts) == (
            1, 1, 1, 2 if index % 3 == 2 else 1)
        if state.status is RunStatus.COMPLETED:
            assert state.outputs == last.payload["outputs"]  # type: ignore[index]
    # Run 1 was stamped in 1969: negative nanoseconds survive Java's zig-zag varints.
    assert int(by_run[list(by_run)[1]][0].timestamp) < 0
    # Payloads came as Jackson text; runfold keeps the value, not the spelling.
    tiny = by_run[list(by_run)[0]][0].payload["inputs"]["tiny"]  # type: ignore[index]
    assert tiny == 1e-7 and serde.dumps(tiny) == "1e-7"
