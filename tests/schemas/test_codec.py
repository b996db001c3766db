"""The Avro codec: round trips in both framings, fastavro-identical bytes, errors that say why."""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from schema_strategies import events, runs, violations
from test_catalog import evolved_event

from schemas import (
    DecodeError,
    EncodeError,
    Event,
    EventCodec,
    GraphStarted,
    NodeEntered,
    NodeExited,
    RecordCodec,
    Run,
    RunCodec,
    Violation,
    ViolationCodec,
    decode_event,
    decode_run,
    decode_violation,
    default_catalog,
    encode_event,
    encode_run,
    encode_violation,
)
from schemas.catalog import AVRO_DIR, SchemaCatalog
from schemas.records import model_from_record, model_to_record

pytestmark = pytest.mark.unit

REGISTRY = EventCodec(registry="mock://runfold-tests")
CODECS: dict[type[Any], Any] = {
    Event: EventCodec(registry="mock://runfold-tests"),
    Run: RunCodec(registry="mock://runfold-tests"),
    Violation: ViolationCodec(registry="mock://runfold-tests"),
}


def fastavro_body(value: Any) -> bytes:
    schema = default_catalog().current(type(value).__name__).parsed
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, model_to_record(value, schema))
    return out.getvalue()


def assert_round_trips(value: Any) -> None:
    codec = CODECS[type(value)]
    single = codec.encode(value)
    assert single[:2] == b"\xc3\x01"
    assert single[2:10] == default_catalog().current(type(value).__name__).fingerprint
    # The hand-written fast path writes exactly what fastavro writes ...
    assert single[10:] == fastavro_body(value)
    # ... and reads what fastavro reads.
    schema = default_catalog().current(type(value).__name__).parsed
    record = fastavro.schemaless_reader(
        io.BytesIO(single[10:]), schema, None, return_record_name=True
    )
    assert model_from_record(type(value), record) == value
    confluent = codec.encode(value, framing="confluent")
    assert confluent[:1] == b"\x00"
    assert confluent[5:] == single[10:]
    for data in (single, confluent):
        again = codec.decode(data)
        assert again == value
        assert again.to_json() == value.to_json()  # ints stay ints, floats floats, -0.0 too


FAST = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)


@FAST
@given(events(avro=True))
def test_events_round_trip_in_both_framings(event: Event) -> None:
    assert_round_trips(event)
    assert decode_event(encode_event(event)).timestamp == event.timestamp  # nanoseconds


@FAST
@given(runs(avro=True))
def test_runs_round_trip_in_both_framings(run: Run) -> None:
    assert_round_trips(run)
    assert decode_run(encode_run(run)) == run


@FAST
@given(violations())
def test_violations_round_trip_in_both_framings(violation: Violation) -> None:
    assert_round_trips(violation)
    assert decode_violation(encode_violation(violation)) == violation


def test_seq_zero_is_refused_at_decode(event_factory: Callable[..., Event]) -> None:
    # Seqs start at 1 (DESIGN §1): a record with seq 0 goes to the DLQ, not into a run.
    with pytest.raises(DecodeError) as caught:
        decode_event(encode_event(event_factory(seq=0)))
    assert caught.value.reason == "invalid-value"
    assert "seq: 0 is not a seq (seqs start at 1)" in str(caught.value)


def test_decoder_takes_memoryview_and_bytearray(event_factory: Callable[..., Event]) -> None:
    data = encode_event(event_factory())
    assert decode_event(memoryview(data)) == decode_event(bytearray(data)) == event_factory()


# --- encode errors --------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"seq": 2**63}, "seq=9223372036854775808"),
        ({"kind": NodeExited(node_id="n", duration_ms=2**64 - 1)}, "kind.duration_ms"),
    ],
)
def test_u64_beyond_avro_long_cannot_be_encoded(
    event_factory: Callable[..., Event], overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(EncodeError, match=field):
        encode_event(event_factory(**overrides))


def test_confluent_framing_without_a_registry_says_what_to_do(
    event_factory: Callable[..., Event],
) -> None:
    with pytest.raises(EncodeError, match="registry=<client or URL>"):
        EventCodec().encode(event_factory(), framing="confluent")


# --- decode errors: one row per way bytes can be wrong ---------------------------

HEADER = b"\xc3\x01" + default_catalog().current("Event").fingerprint


def body(**overrides: Any) -> bytes:
    """An Event.v1 body written by fastavro, with raw field values overridden."""
    record: dict[str, Any] = {
        "run_id": "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b",
        "seq": 1,
        "timestamp": 1_714_564_800_123_456_789,
        "kind": ("runfold.NodeEntered", {"node_id": "n", "iteration": 1}),
        "payload": "{}",
    }
    record.update(overrides)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, default_catalog().current("Event").parsed, record)
    return out.getvalue()


GOOD = HEADER + body()

DECODE_ERRORS = [
    ("empty", b"", "empty", "empty message"),
    ("wrong magic", b"\x7b\x22seq\x22", "wrong-magic", "wrong magic byte 7b"),
    ("half magic", b"\xc3\x02" + bytes(12), "wrong-magic", "c3 02"),
    ("short header", b"\xc3\x01\x19\x28", "truncated", "needs 10 bytes"),
    (
        "unknown fingerprint",
        b"\xc3\x01" + bytes.fromhex("0102030405060708") + body(),
        "unknown-fingerprint",
        "0102030405060708",
    ),
    (
        "a Run, not an Event",
        encode_run(
            Run.from_json(
                '{"run_id":"6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b","agent_spec_digest":"d",'
                '"git_sha":"g","started_at":"2024-05-01T12:00:00Z","finished_at":null,'
                '"status":"RUNNING","inputs":{},"outputs":null,"final_state_digest":null}'
            )
        ),
        "unknown-fingerprint",
        "holds a Run.v1; this codec reads Event",
    ),
    ("truncated body", GOOD[:-5], "truncated", "truncated Event body"),
    ("header only", HEADER, "truncated", "truncated Event body"),
    ("trailing bytes", GOOD + b"\x00\x00", "invalid-body", "2 bytes left"),
    ("union branch", HEADER + body()[:47] + b"\x40", "invalid-body", "branch 32"),
    ("bad utf-8", HEADER + b"\x04\xff\xfe" + body()[37:], "invalid-body", "not UTF-8"),
    (
        "u32 too big",
        HEADER + body(kind=("runfold.NodeEntered", {"node_id": "n", "iteration": 2**32})),
        "invalid-value",
        "kind.iteration",
    ),
    ("negative seq", HEADER + body(seq=-1), "invalid-value", "seq: -1 is not a seq"),
    (
        "not a uuid",
        HEADER + body(run_id="6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4X"),
        "invalid-value",
        "run_id",
    ),
    ("payload not JSON", HEADER + body(payload="{oops"), "invalid-json", "payload"),
    ("payload NaN", HEADER + body(payload="NaN"), "invalid-json", "NaN"),
    (
        "confluent, no registry",
        b"\x00\x00\x00\x00\x01" + body(),
        "registry-unavailable",
        "no schema registry",
    ),
]


@pytest.mark.parametrize(
    ("case", "data", "reason", "says"), DECODE_ERRORS, ids=[row[0] for row in DECODE_ERRORS]
)
def test_undecodable_bytes_raise_decode_error_saying_why(
    case: str, data: bytes, reason: str, says: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        EventCodec().decode(data)
    assert caught.value.reason == reason
    assert says in str(caught.value)


def test_the_library_error_is_kept_as_cause() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_event(HEADER + body(payload="{oops"))
    assert isinstance(caught.value.__cause__, ValueError)


def test_the_fastavro_path_keeps_fastavros_error(tmp_path: Path) -> None:
    codec = EventCodec(catalog=_evolved_catalog(tmp_path))  # v2 current: fastavro reads v1
    with pytest.raises(DecodeError) as caught:
        codec.decode(GOOD[:-5])
    assert caught.value.reason == "truncated"
    assert caught.value.__cause__ is not None


def test_unknown_schema_id_in_the_registry() -> None:
    with pytest.raises(DecodeError) as caught:
        REGISTRY.decode(b"\x00\x00\x00\x30\x39" + body())
    assert caught.value.reason == "unknown-schema-id"
    assert "12345" in str(caught.value)


def test_decode_error_knows_where_the_bytes_came_from_and_pickles() -> None:
    error = DecodeError("wrong magic byte 7b", reason="wrong-magic").at("events", 3, 42)
    assert str(error) == "wrong magic byte 7b (at events[3]@42)"
    again = pickle.loads(pickle.dumps(error))
    assert (again.reason, again.topic, again.partition, again.offset) == (
        "wrong-magic",
        "events",
        3,
        42,
    )


def test_one_codec_reads_both_framings(event_factory: Callable[..., Event]) -> None:
    event = event_factory(kind=GraphStarted())
    assert REGISTRY.decode(REGISTRY.encode(event)) == event
    assert REGISTRY.decode(REGISTRY.encode(event, framing="confluent")) == event


# --- other writer versions, other records ---------------------------------------


def _evolved_catalog(tmp_path: Path) -> SchemaCatalog:
    for path in AVRO_DIR.glob("*.avsc"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "Event.v2.avsc").write_text(json.dumps(evolved_event()))
    return SchemaCatalog(tmp_path)


@settings(max_examples=40, deadline=None)
@given(events(avro=True))
def test_an_old_writer_version_is_resolved_to_the_current_one(event: Event) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        codec = EventCodec(catalog=_evolved_catalog(Path(directory)))
    assert codec.current.version == 2
    assert codec.decode(encode_event(event)) == event  # written as v1, read as v2
    assert codec.decode(codec.encode(event)) == event  # v2 through fastavro both ways


def test_a_newer_version_than_the_reader_knows_is_named(
    tmp_path: Path, event_factory: Callable[..., Event]
) -> None:
    data = EventCodec(catalog=_evolved_catalog(tmp_path)).encode(event_factory())
    with pytest.raises(DecodeError, match="unknown schema fingerprint") as caught:
        decode_event(data)
    assert caught.value.reason == "unknown-fingerprint"


def test_record_codec_handles_schemas_referring_to_others(tmp_path: Path) -> None:
    for name in ("Run.v1.avsc", "Violation.v1.avsc"):
        (tmp_path / name).write_text((AVRO_DIR / name).read_text())
    (tmp_path / "Snapshot.v1.avsc").write_text(
        json.dumps(
            {
                "type": "record",
                "name": "Snapshot",
                "namespace": "runfold",
                "fields": [
                    {"name": "run", "type": "runfold.Run"},
                    {"name": "violations", "type": {"type": "array", "items": "Violation"}},
                ],
            }
        )
    )
    codec = RecordCodec("Snapshot", catalog=SchemaCatalog(tmp_path), registry="mock://snap")
    run = {
        "run_id": "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b",
        "agent_spec_digest": "d",
        "git_sha": "g",
        "started_at": 5,
        "finished_at": None,
        "status": "RUNNING",
        "inputs": "{}",
        "outputs": None,
        "final_state_digest": None,
    }
    record = {"run": run, "violations": []}
    for framing in ("single-object", "confluent"):
        decoded = codec.decode(codec.encode(record, framing=framing))  # type: ignore[arg-type]
        assert str(decoded["run"]["run_id"]) == run["run_id"]
        assert decoded["violations"] == []


def test_node_entered_literal_bytes(event_factory: Callable[..., Event]) -> None:
    event = event_factory(kind=NodeEntered(node_id="n", iteration=1), payload={})
    assert encode_event(event) == GOOD  # fastavro's bytes, header included


@pytest.mark.parametrize(
    ("overrides", "reason", "says"),
    [
        ({"payload": "{oops"}, "invalid-json", "payload: not JSON"),
        ({"seq": -1}, "invalid-value", "seq: -1 is not a seq (seqs start at 1)"),
        (
            {"kind": ("runfold.NodeEntered", {"node_id": "n", "iteration": 2**32})},
            "invalid-value",
            "kind.node_entered.iteration",
        ),
    ],
)
def test_the_fastavro_path_names_invalid_values_too(
    tmp_path: Path, overrides: dict[str, Any], reason: str, says: str
) -> None:
    codec = EventCodec(catalog=_evolved_catalog(tmp_path))  # v1 bytes go through fastavro
    with pytest.raises(DecodeError) as caught:
        codec.decode(HEADER + body(**overrides))
    assert caught.value.reason == reason
    assert says in str(caught.value)


# --- what no Rust agent writes: refused in every decode path ----------------------

_SEQ_AT = 37  # the seq varint follows the run_id string (1 + 36 bytes)
_GOOD_BODY = body()
_STAMP_AT = _SEQ_AT + 1  # seq 1 is one byte; the timestamp is a 9-byte varint
_UUID_DIGITS = "6f1c2a9e3b4d4e5f8a7b9c0d1e2f3a4b"

# (case, body, reason, what the message must say in every path)
# fmt: off
REFUSED_BODIES = [
    ("seq varint past 64 bits", _GOOD_BODY[:_SEQ_AT] + b"\xff" * 9 + b"\x02"
     + _GOOD_BODY[_SEQ_AT + 1 :], "invalid-body", "runs past 64 bits"),
    ("seq varint of 11 bytes", _GOOD_BODY[:_SEQ_AT] + b"\x82" + b"\x80" * 9 + b"\x00"
     + _GOOD_BODY[_SEQ_AT + 1 :], "invalid-body", "more than 10 bytes"),
    ("timestamp varint past 64 bits", _GOOD_BODY[:_STAMP_AT] + b"\xff" * 9 + b"\x7f"
     + _GOOD_BODY[_STAMP_AT + 9 :], "invalid-body", "runs past 64 bits"),
    ("seq 0", body(seq=0), "invalid-value", "seqs start at 1"),
    ("seq 2^63 wrapped to -2^63", body(seq=-(2**63)), "invalid-value", "is not a seq"),
    ("payload nested 128 deep", body(payload="[" * 128 + "]" * 128), "invalid-json",
     "nested deeper than 127"),
    ("payload nested 100k deep", body(payload="[" * 100_000 + "]" * 100_000), "invalid-json",
     "nested deeper than 127"),
    ("payload not UTF-8", _GOOD_BODY[:-3] + b"\x04\xc3\x28", "invalid-body", "not UTF-8"),
    ("run_id urn: + 32 digits", body(run_id="urn:" + _UUID_DIGITS), "invalid-value",
     "not a UUID"),
    ("run_id hyphens misplaced", body(run_id="-" * 4 + _UUID_DIGITS), "invalid-value",
     "not a UUID"),
    ("run_id digits with _", body(run_id="6f1c_a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"),
     "invalid-value", "not a UUID"),
    ("run_id with a space", body(run_id=" 6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"[:36]),
     "invalid-value", "not a UUID"),
    ("a second record after the first", _GOOD_BODY + _GOOD_BODY, "invalid-body",
     "bytes left after the record"),
]
# fmt: on


def _paths(tmp_path: Path) -> dict[str, Callable[[bytes], Any]]:
    """Every way an Event body is decoded: avro_binary (single-object and Confluent framing
    of the current version) and fastavro held to the same rules (an older writer version,
    by fingerprint and by registry id)."""
    evolved = EventCodec(catalog=_evolved_catalog(tmp_path), registry="mock://runfold-strict")
    v1_id = REGISTRY.header("confluent")  # registers Event.v1 in the shared mock registry
    evolved_v1_id = evolved.header("confluent")[:0]  # the evolved codec's registry, v2 id
    from confluent_kafka.schema_registry import Schema

    v1 = default_catalog().current("Event")
    schema_id = evolved._registry.client.register_schema(  # type: ignore[union-attr]
        "old-writer", Schema(v1.schema_text, "AVRO")
    )
    old_writer = b"\x00" + int(schema_id).to_bytes(4, "big") + evolved_v1_id
    return {
        "avro_binary": lambda b: EventCodec().decode(HEADER + b),
        "avro_binary, Confluent framing": lambda b: REGISTRY.decode(v1_id + b),
        "fastavro, older version by fingerprint": lambda b: evolved.decode(HEADER + b),
        "fastavro, older version by registry id": lambda b: evolved.decode(old_writer + b),
    }


@pytest.mark.parametrize(
    ("case", "data", "reason", "says"), REFUSED_BODIES, ids=[row[0] for row in REFUSED_BODIES]
)
def test_what_no_rust_agent_writes_is_refused_in_every_decode_path(
    tmp_path: Path, case: str, data: bytes, reason: str, says: str
) -> None:
    for path, decode in _paths(tmp_path).items():
        with pytest.raises(DecodeError) as caught:
            decode(data)
        assert (caught.value.reason, path) == (reason, path), str(caught.value)
        assert says in str(caught.value), (path, str(caught.value))
    assert EventCodec().decode(HEADER + _GOOD_BODY).seq == 1  # the unharmed body reads


def test_the_edges_of_the_wire_still_read(tmp_path: Path) -> None:
    """The extremes a Rust agent can write: seq 2**63 - 1, timestamps -2**63 and 2**63 - 1
    (years 1677 and 2262), an upper-case UUID, a payload 127 levels deep."""
    edges = [
        body(seq=2**63 - 1),
        body(timestamp=-(2**63)),
        body(timestamp=2**63 - 1),
        body(run_id="6F1C2A9E-3B4D-4E5F-8A7B-9C0D1E2F3A4B"),
        body(payload="[" * 127 + "]" * 127),
    ]
    for data in edges:
        for path, decode in _paths(tmp_path).items():
            assert isinstance(decode(data), Event), path
