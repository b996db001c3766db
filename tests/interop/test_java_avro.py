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

from consumers import fold
from producers.fleet import DEFAULT_START, Fleet, FleetConfig
from schemas import (
    DecodeError,
    Event,
    NodeEntered,
    RunStatus,
    Timestamp,
    ViolationKind,
    default_catalog,
    serde,
)
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
    assert set(java) == {"Event", "Run", "RunMarker", "RunState", "RunSummary", "Violation"}
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
    fleet = Fleet(FleetConfig(runs=60, seed=11, start=_NANO_START))
    events = [decode_event(value) for _key, value, _meta in fleet.records()]
    assert len(events) > 2000

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


# Avro's Java library checks only Avro types: a ``uuid`` string, a Rust u32 in a ``long`` or
# the payload's JSON text are not its business. What it lets through, runfold must refuse
# with a reason (the DLQ names it), or accept as the Rust twin would.
_REFUSED = {
    "braced uuid": ({"run_id": "{0198c0de-7a1b-7c3d-8e4f-a1b2c3d4e5f6}"}, "invalid-value"),
    "uuid without hyphens": ({"run_id": "0198c0de7a1b7c3d8e4fa1b2c3d4e5f6"}, "invalid-value"),
    "not a uuid": ({"run_id": "not-a-uuid"}, "invalid-value"),
    "negative seq": ({"seq": -1}, "invalid-value"),
    "u32 above range": ({"iteration": 2**32}, "invalid-value"),
    "u32 negative": ({"iteration": -1}, "invalid-value"),
    "payload not JSON": ({"payload": "{"}, "invalid-json"),
    "payload NaN": ({"payload": '{"x":NaN}'}, "invalid-json"),
    "payload lone surrogate": ({"payload": '{"a":"\\ud800"}'}, "invalid-json"),
}
_NORMALISED = {
    "upper-case uuid": {"run_id": "0198C0DE-7A1B-7C3D-8E4F-A1B2C3D4E5F6"},
    "payload with spaces": {"payload": '{ "a" : 1 }'},
    "payload in Jackson's float style": {"payload": '{"a":1.0E-7}'},
}


def _node_entered_avro_json(change: dict[str, Any]) -> dict[str, Any]:
    base = event_avro_json(edge_events()[0].model_copy(
        update={"kind": NodeEntered(node_id="n", iteration=1)}))
    for name, value in change.items():
        if name == "iteration":
            base["kind"]["runfold.NodeEntered"]["iteration"] = value
        else:
            base[name] = value
    return base


@pytest.fixture(scope="module")
def java_written_oddities(java_interop: JavaInterop, tmp_path_factory: pytest.TempPathFactory
                          ) -> dict[str, bytes]:
    """Every case of the two tables above, written by Avro's Java encoder in one JVM run."""
    cases = {**{name: change for name, (change, _) in _REFUSED.items()}, **_NORMALISED}
    folder = tmp_path_factory.mktemp("oddities")
    source = folder / "in.jsonl"
    source.write_text("".join(json.dumps(_node_entered_avro_json(c)) + "\n"
                              for c in cases.values()))
    java_interop.run("encode-json", str(source), str(folder / "out.hex"))
    messages = [bytes.fromhex(h) for h in (folder / "out.hex").read_text().split()]
    return dict(zip(cases, messages, strict=True))


@pytest.mark.parametrize("case", sorted(_REFUSED))
def test_runfold_refuses_what_avro_java_lets_through(
    java_written_oddities: dict[str, bytes], case: str
) -> None:
    """Java wrote it without complaint; runfold's decoder names what is wrong."""
    with pytest.raises(DecodeError) as caught:
        decode_event(java_written_oddities[case])
    assert caught.value.reason == _REFUSED[case][1]


@pytest.mark.parametrize("case", sorted(_NORMALISED))
def test_runfold_normalises_what_the_rust_twin_accepts(
    java_written_oddities: dict[str, bytes], case: str
) -> None:
    """Decoded to the same value; runfold writes it back in canonical text (other bytes)."""
    message = java_written_oddities[case]
    event = decode_event(message)
    change = _NORMALISED[case]
    if "run_id" in change:
        assert str(event.run_id) == change["run_id"].lower()
    else:
        assert event.payload == json.loads(change["payload"])
    assert encode_event(event) != message
    assert decode_event(encode_event(event)) == event
