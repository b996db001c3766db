"""One content digest: the library fold and the service judge duplicate vs conflict alike.

:func:`consumers.digest.content_digest` digests the decoded event's canonical Avro
body (payload as canonical JSON). The service's general path digests the decoded event
with it; the C lane hands over the digest of the record's bytes only when it proved
them canonical. So the same event, whatever its framing (single-object, Confluent) or
the text of its payload (key order, whitespace), has one digest in every path, and a
state folded by the library is continued by the service without calling a redelivery
a conflict.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from fold_events import MS, make_event
from service_fixtures import OfflineService

from consumers import apply_event, content_digest
from consumers.service.edge import FoldEdge
from consumers.service.lane import compiled_lane_available
from consumers.state import RunState
from schemas import Event, avro_binary, codec, serde
from schemas.codec import configure_registry, current_event_header

pytestmark = pytest.mark.unit

RUN = UUID("5d0c6a8e-3f1b-4c2d-9e8f-0a1b2c3d4e5f")
KEY = str(RUN).encode()
T0 = 1_700_000_000_000_000_000
PAYLOAD = {"model": "m", "args": {"q": "plan", "k": 3}, "n": [1, "é", None, True]}


@pytest.fixture
def registry() -> Iterator[None]:
    """A mock schema registry for the module-level codec (Confluent framing)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    configure_registry(SchemaRegistryClient.new_client({"url": "mock://content-digest"}))
    yield
    configure_registry(None)


def _event(seq: int, kind: str = "tool_called", payload: Any = PAYLOAD) -> Event:
    """``make_event`` of ``RUN`` at ``T0 + seq`` ms, carrying ``PAYLOAD`` unless told."""
    return make_event(seq, kind, payload, at=T0 + seq * MS, run_id=RUN)


def _single_object(event: Event, payload_text: str) -> bytes:
    """``event`` framed single-object, its payload written as ``payload_text``."""
    value = codec.encode_event(event)
    written = avro_binary.write_string(serde.dumps(event.payload))  # the last field
    assert value.endswith(written)
    return value[: len(value) - len(written)] + avro_binary.write_string(payload_text)


def _encodings(event: Event) -> dict[str, bytes]:
    """The same event as other writers could send it."""
    payload = event.payload
    return {
        "serde (insertion order)": codec.encode_event(event),
        "canonical": _single_object(event, serde.canonical_dumps(payload)),
        "reversed keys": _single_object(event, json.dumps(_reversed(payload))),
        "indented": _single_object(event, json.dumps(payload, indent=2, ensure_ascii=True)),
    }


def _reversed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reversed(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed(v) for v in value]
    return value


def _fold(offline: OfflineService, records: list[bytes], first_offset: int = 0) -> None:
    offline.offset = first_offset
    offline.fold_bytes((0, KEY, value) for value in records)


def _slot(state: RunState, seq: int) -> int:
    return state.digests[seq % len(state.digests)]


def test_the_encodings_differ_in_bytes_but_not_in_content() -> None:
    event = _event(2)
    encodings = _encodings(event)
    assert len(set(encodings.values())) == len(encodings)  # four different byte strings
    for value in encodings.values():
        assert codec.decode_event(value) == event


@pytest.mark.parametrize("lane", [True, False])
def test_every_encoding_gets_the_library_digest_in_the_service(lane: bool) -> None:
    event = _event(2)
    expected = content_digest(event)
    start = codec.encode_event(_event(1, "graph_started", {}))
    for name, value in _encodings(event).items():
        offline = OfflineService(FoldEdge(lane=lane))
        service = offline.service
        _fold(offline, [start, value])
        state = service._store.runs[0][KEY]
        assert state.last_seq == 2, name
        assert _slot(state, 2) == expected, name
        if service.edge.lane is not None:
            read = service.edge.lane.read_value(KEY, value)
            # The lane reads only a canonical body, and its digest is then the library's.
            assert (read is not None) == (name == "canonical"), name
            if read is not None:
                assert read[3] == expected


@pytest.mark.usefixtures("registry")
@pytest.mark.parametrize("lane", [True, False])
def test_confluent_framing_gets_the_same_digest(lane: bool) -> None:
    event = _event(2, payload={"a": 1, "b": "x"})  # serde's order is canonical here
    value = codec.encode_event(event, framing="confluent")
    assert value[:1] == b"\x00"
    start = codec.encode_event(_event(1, "graph_started", {}), framing="confluent")
    offline = OfflineService(FoldEdge(lane=lane))
    service = offline.service
    _fold(offline, [start, value])
    assert _slot(service._store.runs[0][KEY], 2) == content_digest(event)
    if lane and compiled_lane_available():
        assert service.edge.lane is not None
        header = current_event_header(value)
        assert header is not None and service.edge.lane.learn(header)
        read = service.edge.lane.read_value(KEY, value)
        assert read is not None and read[3] == content_digest(event)


@pytest.mark.parametrize("lane", [True, False])
def test_a_library_folded_state_calls_a_redelivery_a_duplicate_in_the_service(
    lane: bool,
) -> None:
    events = [_event(1, "graph_started", {}), _event(2), _event(3, payload={"z": 0, "a": 1})]
    state: RunState | None = None
    for event in events:
        state, _ = apply_event(state, event)  # the library's own digest
    assert state is not None
    for name, value in [
        *_encodings(events[1]).items(),
        *(("seq 3 " + n, v) for n, v in _encodings(events[2]).items()),
    ]:
        offline = OfflineService(FoldEdge(lane=lane))
        service = offline.service
        service._store.put(0, KEY, state.copy())
        _fold(offline, [value], first_offset=100)
        folded = service._store.runs[0][KEY]
        assert service._txn_stats.duplicate == 1, name
        assert service._txn_stats.violation == 0, name
        assert folded.duplicates == 1 and folded.last_seq == 3, name
    # Other content at seq 2 is still a conflict, in either path.
    offline = OfflineService(FoldEdge(lane=lane))
    service = offline.service
    service._store.put(0, KEY, state.copy())
    _fold(offline, [codec.encode_event(_event(2, payload={"model": "other"}))], 100)
    assert service._txn_stats.violation == 1 and service._txn_stats.duplicate == 0
