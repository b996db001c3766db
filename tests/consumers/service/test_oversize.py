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
from consumers.service.oversize import (
    KEPT_CHARS,
    TRUNCATED_MARKER,
    Fitted,
    StateTooLarge,
    shrink_to_fit,
)
from consumers.state import RunState
from runfold.topics import DEFAULT_MAX_MESSAGE_BYTES, output_max_bytes, topic_specs
from schemas import Event, GraphStarted, Timestamp, ToolCalled

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


def _state_with(inputs: object, outputs: object) -> tuple[bytes, RunState]:
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


def _shrink(state: object, key: bytes, limit: int) -> Fitted:
    edge = FoldEdge.default()
    return shrink_to_fit(key, state, edge.encode_state, limit, edge.config)  # type: ignore[arg-type]


def test_a_state_that_fits_is_written_as_is() -> None:
    key, state = _state_with({"doc": "small"}, None)
    before = state.copy()
    fitted = _shrink(state, key, 1_000_000)
    assert fitted.value == FoldEdge.default().encode_state(before)
    assert fitted.steps == [] and fitted.outcomes == [] and state == before


def test_a_state_too_large_gets_its_largest_field_marked_in_memory_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    edge = FoldEdge.default()
    key, state = _state_with({"doc": "x" * 200_000}, {"answer": "y" * 1000})
    fitted = _shrink(state, key, 100_000)
    assert record_size(key, fitted.value) <= 100_000
    back = edge.decode_state(fitted.value)
    assert back.inputs == {TRUNCATED_MARKER: {"field": "inputs", "bytes": 200_010}}
    assert back.outputs == {"answer": "y" * 1000}  # the small field is kept
    assert back.run_id == state.run_id and back.last_seq == 1
    assert back == state  # what a restart restores is what the service holds
    assert key.decode() in caplog.text


def _buffered_state(events: int, size: int) -> tuple[bytes, RunState]:
    key, state = _state_with({"q": 1}, None)
    edge = FoldEdge.default()
    for seq in range(3, 3 + events):  # seq 2 never comes
        event = Event(
            run_id=state.run_id,
            seq=seq,
            timestamp=Timestamp(1 + seq),
            kind=ToolCalled(tool_name="t"),
            payload={"blob": "z" * size},
        )
        edge.apply(state, event)
    return key, state


def test_a_reorder_buffer_too_large_is_flushed_and_its_gap_declared() -> None:
    key, state = _buffered_state(40, 2000)
    assert len(state.pending_events) == 40
    fitted = _shrink(state, key, 20_000)
    assert record_size(key, fitted.value) <= 20_000
    assert not state.pending_events and state.last_seq == 42
    gaps = [v for o in fitted.outcomes for v in o.violations]
    assert [(v.kind.value, v.first_seq, v.last_seq) for v in gaps] == [("gap", 2, 2)]
    assert all(o.released for o in fitted.outcomes) and len(fitted.outcomes) == 40
    assert state.missing == [(2, 2)]
    assert any("flushed" in step for step in fitted.steps)


def test_violation_texts_go_before_the_buffer() -> None:
    key, state = _buffered_state(3, 10)
    edge = FoldEdge.default()
    for _ in range(16):  # conflicts at seq 1, long texts kept in recent_violations
        other = Event(
            run_id=state.run_id,
            seq=1,
            timestamp=Timestamp(1),
            kind=GraphStarted(),
            payload={"agent_spec_digest": "d" * 600, "git_sha": "g", "inputs": {}},
        )
        edge.apply(state, other)
    assert len(state.recent_violations) == 16
    size = len(edge.encode_state(state))
    fitted = _shrink(state, key, size + 1024 - 100)  # just over the limit
    assert not state.recent_violations and state.violations_dropped == 16
    assert state.violation_counts["conflict"] == 16
    assert len(state.pending_events) == 3 and fitted.outcomes == []


def test_long_identity_strings_are_cut_last() -> None:
    key, state = _state_with({"q": 1}, None)
    state.git_sha = "s" * 100_000
    fitted = _shrink(state, key, 10_000)
    assert state.git_sha.startswith("s" * KEPT_CHARS)
    assert state.git_sha.endswith(f"({TRUNCATED_MARKER}: 100000 bytes)")
    assert record_size(key, fitted.value) <= 10_000


def test_a_limit_below_what_any_state_needs_is_named() -> None:
    key, state = _state_with({"doc": "x" * 10}, None)
    with pytest.raises(StateTooLarge, match="raise max.message.bytes"):
        _shrink(state, key, 100)


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


def test_a_runs_two_records_are_shrunk_together_until_both_fit() -> None:
    """The service's encode gives the changelog record and the agent-runs summary: both are
    held to the limit, and both are of the state as shrunk (what a restart restores)."""
    edge = FoldEdge.default()
    key, state = _buffered_state(40, 2000)
    fitted = shrink_to_fit(key, state, edge.encode_records, 20_000, edge.config)
    changelog, summary = fitted.values
    assert all(record_size(key, value) <= 20_000 for value in fitted.values)
    assert fitted.value == changelog and (changelog, summary) == edge.encode_records(state)
    assert edge.decode_state(changelog) == state
    view = edge.read_run(summary)
    assert view.pending == 0 and view.state.last_seq == state.last_seq == 42
