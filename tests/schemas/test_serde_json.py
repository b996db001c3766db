"""serde-exact JSON: literal texts that must survive parse + re-serialize byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from schema_strategies import events, json_values, runs

from schemas import (
    EVENT_KINDS,
    Event,
    Run,
    RunfoldError,
    Timestamp,
    ValidationError,
    Violation,
    serde,
)

pytestmark = pytest.mark.unit

ID = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"
TS = "2024-05-01T12:00:00.123456789Z"


def event_json(kind: str, payload: str = "{}", timestamp: str = TS, seq: int = 1) -> str:
    return (
        f'{{"run_id":"{ID}","seq":{seq},"timestamp":"{timestamp}","kind":{kind},'
        f'"payload":{payload}}}'
    )


# One line per EventKind variant (all 16), as serde_json writes it.
VARIANTS = [
    '{"type":"graph_started"}',
    '{"type":"graph_completed","iterations":4294967295,"duration_ms":18446744073709551615}',
    '{"type":"graph_failed","error":"boom: \\"quoted\\"\\n"}',
    '{"type":"node_entered","node_id":"planner","iteration":0}',
    '{"type":"node_exited","node_id":"planner","next_node":null,"duration_ms":12}',
    '{"type":"node_exited","node_id":"planner","next_node":"executor","duration_ms":12}',
    '{"type":"node_failed","node_id":"n","error":"é漢字😀"}',
    '{"type":"tool_called","tool_name":"search"}',
    '{"type":"tool_returned","tool_name":"search"}',
    '{"type":"tool_failed","tool_name":"search"}',
    '{"type":"checkpoint_saved","checkpoint_id":"cp1","node_id":"n"}',
    '{"type":"checkpoint_restored","checkpoint_id":"cp1","node_id":"n"}',
    '{"type":"checkpoint_deleted","checkpoint_id":"cp1"}',
    '{"type":"state_updated","node_id":"n","keys_changed":[]}',
    '{"type":"state_updated","node_id":"n","keys_changed":["a","b"]}',
    '{"type":"message_added","role":"user","content_length":18446744073709551615}',
    '{"type":"graph_interrupted","reason":"cancelled","node_id":"n"}',
    '{"type":"node_retrying","node_id":"n","attempt":3,"delay_ms":250}',
]

PAYLOADS = [
    "null",
    "true",
    "{}",
    "[]",
    '{"z":1,"a":2,"m":{"y":[1,{"x":null}],"b":"c"}}',  # key order kept, not sorted
    '"raw é 漢字 😀 \u2028 \u007f"',  # non-ASCII and DEL written raw
    '"\\"\\\\\\n\\t\\r\\b\\f\\u0000\\u001f\\u000b"',  # serde's escapes, lower-case hex
    "[1.0,-0.0,0.5,1e+16,1.5e+300,1e-7,1.23e-18,0.00001,0.0001,5e-324,9007199254740992.0]",
    "[123456789.123,1000000000000000.0,1.7976931348623157e+308,-2.5]",
    "[0,-1,9223372036854775807,-9223372036854775808,18446744073709551615]",
    "[18446744073709551616,-9223372036854775809]",  # beyond u64/i64: serde reads f64 ...
]
# ... and writes them back as the f64 it holds.
PAYLOADS_NORMALISED = {
    "[18446744073709551616,-9223372036854775809]": (
        "[1.8446744073709552e+19,-9.223372036854776e+18]"
    ),
}

TIMESTAMPS = [
    "2024-05-01T12:00:00Z",  # 0 fraction digits
    "2024-05-01T12:00:00.100Z",  # 3
    "2024-05-01T12:00:00.000001Z",  # 6
    "2024-05-01T12:00:00.000000001Z",  # 9
    "1969-12-31T23:59:59.999999999Z",  # one nanosecond before the epoch
    "1970-01-01T00:00:00Z",
    "1677-09-21T00:12:43.145224192Z",  # the earliest an Avro long of nanos holds
    "0001-01-01T00:00:00Z",
    "0999-03-01T00:00:00.5Z".replace(".5Z", ".500Z"),
    "9999-12-31T23:59:59.999999999Z",
    "+10000-01-01T00:00:00Z",  # chrono signs years outside 0..=9999
    "-0001-12-31T00:00:00Z",
    "2024-02-29T00:00:00Z",
]


@pytest.mark.parametrize("kind", VARIANTS)
def test_every_variant_round_trips_byte_for_byte(kind: str) -> None:
    text = event_json(kind, payload='{"nested":{"list":[1,"two",null]}}')
    event = Event.from_json(text)
    assert event.to_json() == text
    assert event.kind.type == json.loads(kind)["type"]


def test_the_table_covers_all_sixteen_variants() -> None:
    assert {json.loads(kind)["type"] for kind in VARIANTS} == set(EVENT_KINDS)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_round_trip(payload: str) -> None:
    text = event_json('{"type":"graph_started"}', payload=payload)
    expected = event_json(
        '{"type":"graph_started"}', payload=PAYLOADS_NORMALISED.get(payload, payload)
    )
    assert Event.from_json(text).to_json() == expected


@pytest.mark.parametrize("timestamp", TIMESTAMPS)
def test_timestamps_round_trip_to_the_nanosecond(timestamp: str) -> None:
    text = event_json('{"type":"graph_started"}', timestamp=timestamp)
    event = Event.from_json(text)
    assert event.to_json() == text
    assert Timestamp.parse(timestamp).isoformat() == timestamp


@pytest.mark.parametrize(
    ("written", "nanos", "chrono"),
    [
        ("2024-05-01T14:00:00+02:00", 1_714_564_800 * 10**9, "2024-05-01T12:00:00Z"),
        ("2024-05-01t12:00:00.1234567891z", 1_714_564_800_123_456_789, TS),
        ("2024-05-01 12:00:00.12Z", 1_714_564_800_120_000_000, "2024-05-01T12:00:00.120Z"),
        ("1970-01-01T00:00:00Z", 0, "1970-01-01T00:00:00Z"),
        ("1969-12-31T23:59:59Z", -(10**9), "1969-12-31T23:59:59Z"),
    ],
)
def test_timestamp_text_chrono_accepts_is_normalised(written: str, nanos: int, chrono: str) -> None:
    assert Timestamp.parse(written) == nanos
    assert Timestamp(nanos).isoformat() == chrono


def test_missing_option_fields_read_as_none_like_serde() -> None:
    kind = '{"type":"node_exited","node_id":"n","duration_ms":5}'
    event = Event.from_json(event_json(kind))
    assert event.kind.next_node is None  # type: ignore[union-attr]
    assert '"next_node":null' in event.to_json()


def test_unknown_fields_are_ignored_like_serde() -> None:
    text = event_json('{"type":"tool_called","tool_name":"s","extra":1}')
    assert Event.from_json(text[:-1] + ',"later":true}').to_json() == event_json(
        '{"type":"tool_called","tool_name":"s"}'
    )


RUNS = [
    (
        f'{{"run_id":"{ID}","agent_spec_digest":"sha256:abc","git_sha":"0123abcd",'
        '"started_at":"2024-05-01T12:00:00Z","finished_at":null,"status":"RUNNING",'
        '"inputs":{"question":"What is 2+2?"},"outputs":null,"final_state_digest":null}'
    ),
    (
        f'{{"run_id":"{ID}","agent_spec_digest":"d","git_sha":"g",'
        '"started_at":"2024-05-01T12:00:00.000001Z","finished_at":"2024-05-01T12:00:01.5Z",'
        '"status":"COMPLETED","inputs":[],"outputs":{"answer":4,"score":0.5},'
        '"final_state_digest":"sha256:def"}'
    ).replace("01.5Z", "01.500Z"),
    (
        f'{{"run_id":"{ID}","agent_spec_digest":"","git_sha":"",'
        '"started_at":"1900-01-01T00:00:00Z","finished_at":"1900-01-01T00:00:00Z",'
        '"status":"CANCELLED","inputs":null,"outputs":[null],"final_state_digest":null}'
    ),
]


@pytest.mark.parametrize("text", RUNS)
def test_runs_round_trip(text: str) -> None:
    assert Run.from_json(text).to_json() == text


def test_violation_round_trips() -> None:
    text = (
        f'{{"run_id":"{ID}","kind":"gap","first_seq":3,"last_seq":5,'
        '"message":"events 3..=5 never arrived"}'
    )
    assert Violation.from_json(text).to_json() == text


# --- bad input: each row names the input and what the error must say ---------

BAD_EVENTS = [
    ("not json", "{", "JSON"),
    ("not an object", "[1]", "expected an object"),
    ("unknown tag", event_json('{"type":"graph_exploded"}'), "'graph_started', 'graph_completed'"),
    ("missing tag", event_json('{"node_id":"n"}'), "kind"),
    (
        "u32 overflow",
        event_json('{"type":"node_entered","node_id":"n","iteration":4294967296}'),
        "kind.node_entered.iteration",
    ),
    (
        "u32 negative",
        event_json('{"type":"node_retrying","node_id":"n","attempt":-1,"delay_ms":1}'),
        "kind.node_retrying.attempt",
    ),
    ("u64 overflow", event_json('{"type":"graph_started"}', seq=2**64), "seq"),
    ("u64 negative", event_json('{"type":"graph_started"}', seq=-1), "seq"),
    (
        "float for int",
        event_json('{"type":"graph_completed","iterations":1.0,"duration_ms":1}'),
        "iterations",
    ),
    (
        "bool for int",
        event_json('{"type":"graph_completed","iterations":true,"duration_ms":1}'),
        "iterations",
    ),
    (
        "string for int",
        event_json('{"type":"message_added","role":"r","content_length":"5"}'),
        "content_length",
    ),
    ("bad uuid", event_json('{"type":"graph_started"}').replace(ID, "not-a-uuid"), "run_id"),
    (
        "timestamp number",
        event_json('{"type":"graph_started"}').replace(f'"{TS}"', "5"),
        "timestamp",
    ),
    ("timestamp text", event_json('{"type":"graph_started"}', timestamp="yesterday"), "timestamp"),
    (
        "timestamp date",
        event_json('{"type":"graph_started"}', timestamp="2023-02-29T00:00:00Z"),
        "not a valid date",
    ),
    ("NaN", event_json('{"type":"graph_started"}', payload="NaN"), "NaN"),
    ("float overflow", event_json('{"type":"graph_started"}', payload="1e400"), "out of range"),
    ("lone surrogate", event_json('{"type":"graph_started"}', payload='"\\ud800"'), "surrogate"),
    (
        "missing payload",
        event_json('{"type":"graph_started"}').replace(',"payload":{}', ""),
        "payload",
    ),
    (
        "null next_node's sibling missing",
        event_json('{"type":"node_exited","node_id":"n","next_node":null}'),
        "duration_ms",
    ),
]


@pytest.mark.parametrize(("case", "text", "says"), BAD_EVENTS, ids=[row[0] for row in BAD_EVENTS])
def test_bad_event_json_is_rejected_with_a_useful_message(case: str, text: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Event.from_json(text)
    assert says in str(caught.value)
    assert isinstance(caught.value, RunfoldError)
    if case != "not an object":
        assert caught.value.__cause__ is not None  # pydantic's or json's error is kept


def test_run_status_must_be_the_upper_case_word() -> None:
    with pytest.raises(ValidationError, match="status"):
        Run.from_json(RUNS[0].replace('"RUNNING"', '"running"'))


def test_constructing_a_model_with_a_bad_value_raises_the_projects_error() -> None:
    from schemas import NodeEntered

    with pytest.raises(ValidationError, match="iteration.*4294967295"):
        NodeEntered(node_id="n", iteration=2**32)


# --- serde.dumps / loads details ---------------------------------------------

FLOATS = [
    (1.0, "1.0"),
    (-0.0, "-0.0"),
    (1e16, "1e+16"),
    (1e15, "1000000000000000.0"),
    (1.5e300, "1.5e+300"),
    (1e-7, "1e-7"),
    (1.5e-7, "1.5e-7"),
    (1e-5, "0.00001"),
    (1.5e-5, "0.000015"),
    (-1e-5, "-0.00001"),
    (1e-4, "0.0001"),
    (0.1, "0.1"),
    (5e-324, "5e-324"),
    (float("nan"), "null"),
    (float("inf"), "null"),
    (float("-inf"), "null"),
]


@pytest.mark.parametrize(("value", "text"), FLOATS)
def test_floats_are_written_as_serde_json_writes_them(value: float, text: str) -> None:
    assert serde.format_float(value) == text
    assert serde.dumps([value]) == f"[{text}]"


def test_loads_follows_serde_number_rules() -> None:
    assert serde.loads("-0") == 0.0 and str(serde.loads("-0")) == "-0.0"
    assert serde.loads("18446744073709551615") == 2**64 - 1
    assert isinstance(serde.loads("18446744073709551616"), float)
    assert isinstance(serde.loads("-9223372036854775809"), float)
    assert serde.loads('"\\ud83d\\ude00"') == "😀"  # a surrogate pair is fine


@given(json_values)
def test_any_json_value_survives_dumps_then_loads(value: object) -> None:
    text = serde.dumps(value)
    assert serde.dumps(serde.loads(text)) == text
    assert serde.loads(text) == value


@given(events())
def test_event_model_json_model_round_trip(event: Event) -> None:
    text = event.to_json()
    again = Event.from_json(text)
    assert again == event
    assert again.timestamp == event.timestamp  # to the nanosecond
    assert again.to_json() == text


@given(runs())
def test_run_model_json_model_round_trip(run: Run) -> None:
    text = run.to_json()
    again = Run.from_json(text)
    assert again == run
    assert again.to_json() == text


VECTORS = Path(__file__).resolve().parents[1] / "vectors"


@pytest.mark.parametrize(
    ("file_name", "model"), [("serde_events.jsonl", Event), ("serde_runs.jsonl", Run)]
)
def test_every_rust_serde_vector_round_trips(
    file_name: str, model: type[Event] | type[Run]
) -> None:
    path = VECTORS / file_name
    if not path.exists():
        pytest.skip(f"{path} not generated yet (interop/rust)")
    # split on "\n" only: serde writes U+2028 and friends raw, and splitlines() splits there
    lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line]
    assert lines
    mismatches = [line for line in lines if model.from_json(line).to_json() != line]
    assert mismatches == []


@pytest.mark.parametrize(
    ("given_payload", "held", "text"),
    [
        ([2**64], [float(2**64)], "[1.8446744073709552e+19]"),
        ({"n": -(2**63) - 1}, {"n": -9.223372036854776e18}, '{"n":-9.223372036854776e+18}'),
        ([float("nan"), float("inf")], [None, None], "[null,null]"),
        ({"ok": [1, 2.5, True]}, {"ok": [1, 2.5, True]}, '{"ok":[1,2.5,true]}'),
    ],
)
def test_models_hold_payloads_as_serde_json_value_does(
    given_payload: object, held: object, text: str
) -> None:
    event = Event.from_json(event_json('{"type":"graph_started"}')).model_copy(
        update={"payload": None}
    )
    built = Event(**{**dict(event), "payload": given_payload})
    assert built.payload == held
    assert built.to_json() == event_json('{"type":"graph_started"}', payload=text)
    assert Event.from_json(built.to_json()) == built  # so the round trip is exact


def test_an_integer_beyond_f64_is_rejected() -> None:
    event = Event.from_json(event_json('{"type":"graph_started"}'))
    with pytest.raises(ValidationError, match="beyond an f64"):
        Event(**{**dict(event), "payload": 10**400})


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            event_json('{"type":"graph_started"}')[:-1] + ',"seq":2}',
            "duplicate field 'seq' in Event",
        ),
        (
            event_json('{"type":"tool_called","tool_name":"a","tool_name":"b"}'),
            "'tool_name' in kind",
        ),
    ],
)
def test_a_repeated_struct_field_is_refused_like_serde(text: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Event.from_json(text)


def test_a_repeated_payload_key_keeps_its_place_and_last_value_like_serde() -> None:
    text = event_json('{"type":"graph_started"}', payload='{"a":1,"b":2,"a":3}')
    assert Event.from_json(text).to_json() == event_json(
        '{"type":"graph_started"}', payload='{"a":3,"b":2}'
    )


def test_one_digit_month_and_day_read_as_chrono_does() -> None:
    assert Timestamp.parse("2024-5-1T12:00:00Z").isoformat() == "2024-05-01T12:00:00Z"


@pytest.mark.parametrize("opening", ["[", '{"k":'])
def test_nesting_deeper_than_serde_jsons_recursion_limit_is_refused(opening: str) -> None:
    closing = "]" if opening == "[" else "}"
    assert serde.loads(opening * 127 + "1" + closing * 127) is not None  # serde_json reads it
    for depth in (128, 100_000):  # serde_json: "recursion limit exceeded"; Python would recurse
        with pytest.raises(ValueError, match="nested deeper than 127 levels at character"):
            serde.loads(opening * depth + "1" + closing * depth)
    # Brackets inside strings do not nest.
    assert serde.loads('["' + "[" * 500 + '"]') == ["[" * 500]


@given(json_values)
def test_canonical_text_is_the_serde_text_with_keys_sorted(value: object) -> None:
    """canonical_dumps (the content digest's payload form) reads back to the value and is
    dumps of the value with every object's keys in code point order, whatever the order
    the value came in."""
    text = serde.canonical_dumps(value)
    assert serde.loads(text) == serde.loads(serde.dumps(value))
    assert text == serde.dumps(_sorted(value))
    assert serde.canonical_dumps(_reversed(value)) == text
    assert serde.canonical_dumps(serde.loads(text)) == text


def _sorted(value: object) -> object:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _reversed(value: object) -> object:
    if isinstance(value, dict):
        return {k: _reversed(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed(v) for v in value]
    return value
