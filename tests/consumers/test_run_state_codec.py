"""RunState to and from the ``runfold.RunState`` Avro record, exactly."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import fastavro
import pytest
from fold_events import MS, T0, EventFactory, event_strategy
from fold_streams import generate_fleet, interleave, shuffle_within
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers import (
    FoldConfig,
    FoldResult,
    RunState,
    apply_event,
    content_digest,
    digest_bytes,
    fold,
)
from schemas import Event, Timestamp, codec
from schemas.catalog import AVRO_DIR
from schemas.errors import EncodeError, SchemaError
from schemas.framing import SINGLE_OBJECT_HEADER_SIZE

pytestmark = pytest.mark.unit


def _parse_from_files() -> Any:
    """RunState.v1 with the named types it refers to, straight from the .avsc files."""
    named: dict[str, Any] = {}
    for name in ("Run.v1", "Violation.v1"):
        fastavro.parse_schema(json.loads((AVRO_DIR / f"{name}.avsc").read_text()), named)
    return fastavro.parse_schema(json.loads((AVRO_DIR / "RunState.v1.avsc").read_text()), named)


SCHEMA = _parse_from_files()


def through_avro(state: RunState) -> dict[str, Any]:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, SCHEMA, state.to_record())
    buffer.seek(0)
    record = fastavro.schemaless_reader(buffer, SCHEMA, SCHEMA)
    assert isinstance(record, dict)
    return record


def _faulty_fold(config: FoldConfig) -> FoldResult:
    fleet = generate_fleet(seed=21, runs=25)
    stream = shuffle_within(list(interleave(fleet, seed=2)), 4, random.Random(4))
    stream = [e for i, e in enumerate(stream) if i % 29 != 5]  # lost events: gaps
    stream += stream[::5]  # duplicates, some after the end of their run
    return fold(stream, config)


def test_every_kind_of_state_survives_the_avro_round_trip() -> None:
    config = FoldConfig(max_pending_per_run=6, max_delay_ns=10**15)
    result = _faulty_fold(config)
    states = list(result.runs.values())
    assert any(s.pending_events for s in states), "the stream should leave events buffered"
    assert any(s.missing for s in states) and any(s.recent_violations for s in states)
    for state in states:
        state.source_offset = 1234
        back = RunState.from_record(through_avro(state), config)
        assert back == state
        assert back.run.to_json() == state.run.to_json()


def test_round_trip_through_the_codec(event_factory: EventFactory) -> None:
    from schemas import codec

    state, _ = apply_event(None, event_factory(1, "graph_started"))
    apply_event(state, event_factory(3, payload={"x": [1.5, None, "é"]}))
    data = codec.encode_record("RunState", state.to_record())
    assert RunState.from_record(codec.decode_record("RunState", data)) == state


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(event_strategy(), max_size=25))
def test_any_state_round_trips_or_says_why_not(events: list[Event]) -> None:
    config = FoldConfig(max_pending_per_run=3, digest_window=4, max_missing_ranges=2)
    for state in fold(events, config).runs.values():
        try:
            record = through_avro(state)
        except EncodeError as exc:
            assert "does not fit an Avro long" in str(exc)
            continue
        assert RunState.from_record(record, config) == state


def test_a_seq_beyond_an_avro_long_is_refused_by_name(event_factory: EventFactory) -> None:
    state, _ = apply_event(None, event_factory(1, "graph_started"))
    apply_event(state, event_factory(2**63, at=T0 + MS))
    with pytest.raises(EncodeError, match="buffered event's seq = 9223372036854775808"):
        state.to_record()


def test_a_window_of_another_size_is_carried_over_by_seq(event_factory: EventFactory) -> None:
    small, large = FoldConfig(digest_window=4), FoldConfig(digest_window=16)
    state = None
    for seq in range(1, 11):
        state, _ = apply_event(state, event_factory(seq), small)
    assert state is not None
    restored = RunState.from_record(state.to_record(), large)
    for seq in range(7, 11):  # what the small window held is still told apart
        _, [outcome] = apply_event(restored, event_factory(seq), large)
        assert outcome.kind.value == "duplicate" and restored.unverified_duplicates == 0
    _, [outcome] = apply_event(restored, event_factory(9, "tool_failed"), large)
    assert outcome.violations[0].kind.value == "conflict"
    _, [outcome] = apply_event(restored, event_factory(6), large)
    assert restored.unverified_duplicates == 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: r.pop("restore"), "missing field 'restore'"),
        (lambda r: r["run"].update(status="PAUSED"), "'PAUSED' is not a valid RunStatus"),
        (lambda r: r["run"].update(run_id="not-a-uuid"), "badly formed"),
    ],
)
def test_a_damaged_record_raises_a_schema_error(
    event_factory: EventFactory, damage: Any, message: str
) -> None:
    state, _ = apply_event(None, event_factory(1, "graph_started"))
    record = state.to_record()
    damage(record)
    with pytest.raises(SchemaError, match=message):
        RunState.from_record(record)


def test_content_digest_is_pinned(event_factory: EventFactory) -> None:
    """Digests are persisted: if this value changes, restored states misname duplicates."""
    event = Event(
        run_id=event_factory(1).run_id,
        seq=7,
        timestamp=Timestamp.parse("2024-05-01T12:00:00.123456789Z"),
        kind=event_factory(1, "state_updated", keys_changed=["a", "b"]).kind,
        payload={"k": [1, 2.5, None, True, "é"]},
    )
    assert content_digest(event) == 0x32_8EB92D46  # length 0x32 of the content, its CRC-32

    # The canonical Avro content (the body after run_id and seq): the payload's keys in
    # order, whatever order they came in.
    def content(event: Event) -> bytes:
        return codec.encode_event(event)[SINGLE_OBJECT_HEADER_SIZE + 37 + 1 :]

    assert content_digest(event) == digest_bytes(content(event))
    reordered = event.model_copy(update={"payload": {"z": 1, "a": {"y": 2, "b": 3}}})
    ordered = event.model_copy(update={"payload": {"a": {"b": 3, "y": 2}, "z": 1}})
    assert content_digest(reordered) == content_digest(ordered)
    assert content_digest(ordered) == digest_bytes(content(ordered))
    assert content_digest(reordered) != digest_bytes(content(reordered))
    # A kind built without validation (a list where the model holds a tuple) is the same
    # content: its bytes are the same, whether or not the memo can hold it.
    built = Event.model_construct(
        **{
            **event.__dict__,
            "kind": type(event.kind).model_construct(
                type="state_updated", node_id="plan", keys_changed=["a", "b"]
            ),
        }
    )
    assert content_digest(built) == content_digest(event)
