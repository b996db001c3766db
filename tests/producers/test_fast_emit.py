"""The recorder's and producer's fast paths build and write exactly what the models do.

``RunHandle.emit`` builds its Event without validating what the handle vouches for
(its own seq, a UUID, a Timestamp, a kind model) and validates the payload with a
plain-JSON copier before pydantic's validator; ``EventProducer.send`` writes the
record with the key it already holds. Each is compared here with the slow path it
replaces, on generated values.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from producers import ListSink, RunRecorder
from producers.recorder import _Declined, _event, _plain_json
from schemas import (
    EVENT_KINDS,
    Event,
    GraphCompleted,
    GraphFailed,
    GraphInterrupted,
    NodeEntered,
    RunStatus,
    Timestamp,
    ToolCalled,
)
from schemas.codec import EventCodec, keyed_event_encoder
from schemas.errors import ValidationError
from schemas.model import SerdeJson

pytestmark = pytest.mark.unit

_validate = TypeAdapter(SerdeJson).validate_python

_scalars = (
    st.none() | st.booleans() | st.text(max_size=8)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1 == 1.0 == True would hide a change)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_plain_json_copies_as_the_payload_validator_does_or_declines(value: Any) -> None:
    try:
        copied = _plain_json(value)
    except _Declined:
        return  # the validator decides (ints beyond serde's range, NaN, ...)
    assert _same(copied, _validate(value))


@pytest.mark.parametrize(
    "value",
    [(1, 2), {1: "a"}, {"a": {1, 2}}, 2**64, float("nan"), Timestamp(5), RunStatus.FAILED,
     b"bytes", {"a": [uuid.UUID(int=1)]}],
)
def test_anything_not_plain_json_is_left_to_the_validator(value: Any) -> None:
    with pytest.raises(_Declined):
        _plain_json(value)


def test_plain_json_copies_containers() -> None:
    payload = {"a": [1, {"b": None}]}
    copied = _plain_json(payload)
    assert copied == payload
    assert copied is not payload and copied["a"] is not payload["a"]


_kinds = st.sampled_from([
    NodeEntered(node_id="n", iteration=2), ToolCalled(tool_name="t"),
    GraphCompleted(iterations=1, duration_ms=5), GraphFailed(error="x"),
    GraphInterrupted(reason="cancelled", node_id="n"),
])


@settings(max_examples=200, deadline=None)
@given(kind=_kinds, payload=_json, seq=st.integers(min_value=1, max_value=2**64 - 1),
       stamp=st.integers(min_value=-(2**62), max_value=2**62))
def test_fast_event_equals_the_validated_event(kind: Any, payload: Any, seq: int,
                                                stamp: int) -> None:
    run_id = uuid.UUID(int=seq, version=4)
    args = (run_id, seq, Timestamp(stamp), kind, payload)
    try:
        expected = Event(run_id=run_id, seq=seq, timestamp=Timestamp(stamp), kind=kind,
                         payload=payload)
    except ValidationError as exc:
        with pytest.raises(ValidationError) as raised:
            _event(*args)
        assert str(raised.value) == str(exc)
        return
    built = _event(*args)
    assert built == expected
    assert list(built.__dict__) == list(expected.__dict__)
    assert built.model_fields_set == expected.model_fields_set
    assert _same(built.payload, expected.payload)


@pytest.mark.parametrize(
    ("run_id", "timestamp", "kind", "payload"),
    [
        ("not-a-uuid", Timestamp(1), ToolCalled(tool_name="t"), {}),
        (uuid.UUID(int=1), Timestamp(1), "tool_called", {}),
        (uuid.UUID(int=1), Timestamp(1), ToolCalled(tool_name="t"), {"a": object()}),
        (uuid.UUID(int=1), "yesterday", ToolCalled(tool_name="t"), {}),
    ],
)
def test_bad_fields_raise_what_event_raises(run_id: Any, timestamp: Any, kind: Any,
                                            payload: Any) -> None:
    with pytest.raises(ValidationError) as slow:
        Event(run_id=run_id, seq=1, timestamp=timestamp, kind=kind, payload=payload)
    with pytest.raises(ValidationError) as fast:
        _event(run_id, 1, timestamp, kind, payload)
    assert str(fast.value) == str(slow.value)


def test_kind_subclasses_keep_their_meaning() -> None:
    class Entered(NodeEntered):
        pass

    sink = ListSink()
    with RunRecorder(sink).run("s", "g", {}) as run:
        run.emit(Entered(node_id="a", iteration=1))
        run.emit(Entered(node_id="b", iteration=1))
    completed = sink.events[-1].kind
    assert isinstance(completed, GraphCompleted) and completed.iterations == 2


@settings(max_examples=200, deadline=None)
@given(kind=_kinds, payload=_json, seq=st.integers(min_value=1, max_value=2**63 - 1),
       stamp=st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_keyed_encoder_writes_the_codecs_bytes(kind: Any, payload: Any, seq: int,
                                               stamp: int) -> None:
    keyed = keyed_event_encoder("single-object")
    assert keyed is not None
    try:
        event = Event(run_id=uuid.uuid4(), seq=seq, timestamp=Timestamp(stamp), kind=kind,
                      payload=payload)
    except ValidationError:
        return
    assert keyed(event, str(event.run_id).encode()) == EventCodec().encode(event)


def test_every_kind_goes_through_thekeyed_event_encoder() -> None:
    keyed = keyed_event_encoder("single-object")
    assert keyed is not None and keyed_event_encoder("confluent") is None
    for cls in EVENT_KINDS.values():
        kind = cls.model_validate({name: _sample(f.annotation) for name, f in
                                   cls.model_fields.items() if name != "type"})
        event = Event(run_id=uuid.uuid4(), seq=3, timestamp=Timestamp.now(), kind=kind,
                      payload={"k": [1, "é"]})
        assert keyed(event, str(event.run_id).encode()) == EventCodec().encode(event)


def _sample(annotation: Any) -> Any:
    if annotation is int:
        return 7
    if annotation == tuple[str, ...]:
        return ("a", "b")
    return "x"


def test_send_of_an_unencodable_event_raises_the_codecs_error() -> None:
    from producers import EventProducer
    from schemas.errors import EncodeError

    producer = EventProducer("t", bootstrap_servers="127.0.0.1:1")  # never contacted
    event = Event(run_id=uuid.uuid4(), seq=2**63, timestamp=Timestamp(1),
                  kind=ToolCalled(tool_name="t"), payload={})
    with pytest.raises(EncodeError, match="seq"):
        producer.send(event)
    assert producer.report.produced == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=5),
       st.integers(min_value=0, max_value=2**22))
def test_stamp_varints_equal_the_generic_writer(stamps: list[int], step: int) -> None:
    """Successive readings (top bytes kept between calls), Timestamps or ints, any range."""
    from schemas.avro_binary import write_long, write_stamp

    for stamp in stamps:
        for value in (stamp, stamp + step, Timestamp(stamp), 1_767_225_600_000_000_000 + step):
            if -(2**63) <= value < 2**63:
                assert write_stamp(value) == write_long(value)
