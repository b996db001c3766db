"""Records too large for their output topic: truncated to fit, never a reason to stop."""

from __future__ import annotations

import uuid

import pytest

from clients.settings import TopicNames
from consumers.service.config import OutputLimits, ServiceConfig, output_limits, producer_config
from consumers.service.dlq import (
    DLQ_HEADERS,
    TRUNCATED_HEADER,
    DeadLetter,
    dead_letter_headers,
    fit_dead_letter,
    parse_dead_letter_headers,
    record_size,
)
from consumers.service.edge import FoldEdge
from consumers.service.oversize import TRUNCATED_MARKER, fit_state
from runfold.topics import DEFAULT_MAX_MESSAGE_BYTES, output_max_bytes, topic_specs
from schemas import Event, GraphStarted, Timestamp

pytestmark = pytest.mark.unit

_LETTER = DeadLetter("wrong-magic", "bad", "agent-run-events", 1, 7, "DecodeError")


def test_a_dead_letter_that_fits_is_unchanged() -> None:
    headers = dead_letter_headers(_LETTER)
    assert fit_dead_letter(b"k", b"v" * 100, headers, 10_000) == (b"k", b"v" * 100, headers)


def test_a_dead_letter_too_large_keeps_its_headers_a_prefix_and_says_so() -> None:
    value = b"\x7f" + b"g" * 50_000
    key, kept, headers = fit_dead_letter(b"run", value, dead_letter_headers(_LETTER), 20_000)
    assert key == b"run"
    assert kept is not None and value.startswith(kept) and 0 < len(kept) < len(value)
    assert record_size(key, kept, headers) <= 20_000
    names = [name for name, _ in headers]
    assert names[: len(DLQ_HEADERS)] == list(DLQ_HEADERS)
    assert dict(headers)[TRUNCATED_HEADER] == str(len(value)).encode()
    assert parse_dead_letter_headers(headers).source_offset == 7


def test_a_key_too_large_is_dropped_too() -> None:
    key, kept, headers = fit_dead_letter(
        b"k" * 50_000, b"v" * 10, dead_letter_headers(_LETTER), 5_000
    )
    assert key is None and record_size(key, kept, headers) <= 5_000
    assert dict(headers)["runfold.key.truncated"] == b"50000"


def _state_with(inputs: object, outputs: object) -> tuple[bytes, object]:
    edge = FoldEdge.default()
    run_id = uuid.uuid4()
    started = Event(
        run_id=run_id,
        seq=1,
        timestamp=Timestamp(1),
        kind=GraphStarted(),
        payload={"agent_spec_digest": "s", "git_sha": "g", "inputs": inputs},
    )
    state, _ = edge.apply(None, started)
    # Set directly: how the fold fills outputs does not matter to the size check.
    state.outputs = outputs
    return str(run_id).encode(), state


def test_a_state_that_fits_is_written_as_is() -> None:
    encode = FoldEdge.default().encode_state
    key, state = _state_with({"doc": "small"}, None)
    encoded = encode(state)
    assert fit_state(key, state, encoded, encode, 1_000_000) is encoded


def test_a_state_too_large_gets_its_largest_field_marked_and_the_memory_state_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    edge = FoldEdge.default()
    key, state = _state_with({"doc": "x" * 200_000}, {"answer": "y" * 1000})
    encoded = edge.encode_state(state)
    written = fit_state(key, state, encoded, edge.encode_state, 100_000)
    assert written is not None and record_size(key, written) <= 100_000
    back = edge.decode_state(written)
    assert back.inputs == {TRUNCATED_MARKER: {"field": "inputs", "bytes": 200_010}}
    assert back.outputs == {"answer": "y" * 1000}  # the small field is kept
    assert back.run_id == state.run_id and back.last_seq == 1
    assert state.inputs == {"doc": "x" * 200_000}  # in memory: unchanged
    assert key.decode() in caplog.text


def test_a_state_too_large_even_without_its_json_fields_is_not_written() -> None:
    edge = FoldEdge.default()
    key, state = _state_with({"doc": "x" * 10}, None)
    assert fit_state(key, state, edge.encode_state(state), edge.encode_state, 100) is None


def test_topics_are_sized_from_the_events_limit() -> None:
    specs = {s.name: s.config for s in topic_specs(TopicNames(), 3, 1, 16 * 1024 * 1024)}
    events = int(specs["agent-run-events"]["max.message.bytes"])
    dlq, runs = output_max_bytes(events)
    assert int(specs["agent-run-events-dlq"]["max.message.bytes"]) == dlq > events
    assert int(specs["agent-runs"]["max.message.bytes"]) == runs >= 2 * events
    default = {s.name: s.config for s in topic_specs(TopicNames(), 3, 1)}
    assert default["agent-run-events"]["max.message.bytes"] == str(DEFAULT_MAX_MESSAGE_BYTES)


def test_producer_message_max_bytes_covers_the_output_topics() -> None:
    config = ServiceConfig(kafka={"bootstrap.servers": "127.0.0.1:1"})
    limits = OutputLimits(runs=40_000_000, dlq=20_000_000)
    assert producer_config(config, limits=limits)["message.max.bytes"] == 40_000_000
    assert "message.max.bytes" not in producer_config(config)
    fixed = ServiceConfig(kafka={}, max_message_bytes=5_000_000)
    assert output_limits(fixed) == OutputLimits(5_000_000, 5_000_000)
