"""One record never stops the service (issue 15): a state that cannot be encoded, a state
too large for ``agent-runs`` (in-process, real broker)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from service_fixtures import edge_with, header_map, read_output

from clients.settings import TopicNames
from consumers.service import FoldService, ServiceConfig
from consumers.service.config import output_limits
from consumers.service.edge import FoldEdge
from consumers.service.oversize import TRUNCATED_MARKER
from consumers.state import RunState
from schemas import Event, GraphCompleted, GraphStarted, Timestamp, ToolCalled
from schemas.codec import encode_event

pytestmark = pytest.mark.integration

_T0 = 1_767_225_600_000_000_000


def _started(run: uuid.UUID, inputs: Any = None) -> Event:
    payload = {"agent_spec_digest": "s", "git_sha": "g", "inputs": inputs or {"q": 1}}
    return Event(run_id=run, seq=1, timestamp=Timestamp(_T0), kind=GraphStarted(), payload=payload)


def _tool(run: uuid.UUID, seq: int, payload: Any = None) -> Event:
    return Event(
        run_id=run,
        seq=seq,
        timestamp=Timestamp(_T0 + seq),
        kind=ToolCalled(tool_name="t"),
        payload=payload if payload is not None else {"n": seq},
    )


def _send(bootstrap: str, topic: str, events: list[Event]) -> list[bytes]:
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    values = []
    for event in events:
        value = encode_event(event)
        values.append(value)
        producer.produce(topic, value, key=str(event.run_id).encode())
    assert producer.flush(30) == 0
    return values


def _service(bootstrap: str, topics: TopicNames, group: str, edge: FoldEdge) -> FoldService:
    config = ServiceConfig.on_topics(
        {"bootstrap.servers": bootstrap}, topics, group=group, until_idle=2, batch_size=50
    )
    return FoldService(config, edge=edge)


def test_a_record_that_leaves_an_unencodable_state_goes_to_the_dlq_and_the_rest_folds(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    """A fold that makes a state unencodable (here: a broken apply, standing for any bug)
    must not crash-loop the service: the commit aborts, the run is replayed record by
    record, the record that breaks it goes to the DLQ and the run stays as before it."""
    good = [uuid.uuid4() for _ in range(12)]
    poisoned = uuid.uuid4()
    events: list[Event] = []
    for run in good[:6]:
        events += [_started(run), _tool(run, 2), _tool(run, 3)]
    poison = Event(
        run_id=poisoned,
        seq=2,
        timestamp=Timestamp(_T0 + 2),
        kind=GraphCompleted(iterations=1, duration_ms=1),  # not a lane kind: the general path
        payload={"poison": True},
    )
    events += [_started(poisoned), poison]
    for run in good[6:]:
        events += [_started(run), _tool(run, 2), _tool(run, 3)]
    _send(kafka_bootstrap, unique_topics.events, events)

    edge = FoldEdge.default()

    def breaking_apply(state: RunState | None, event: Event) -> Any:
        state, outcomes = edge.apply(state, event)
        if event.payload == {"poison": True}:
            state.retries = 2**64  # a counter no Avro long holds: encode_state raises
        return state, outcomes

    service = _service(
        kafka_bootstrap, unique_topics, "poison-state", edge_with(apply=breaking_apply)
    )
    stats = service.run()  # returns: no ServiceStopped, no exception

    assert stats.dlq_reasons == {"unencodable-state": 1}
    assert stats.aborts >= 1
    assert stats.consumed == len(events) and stats.balanced()
    folded = read_output(kafka_bootstrap, unique_topics)
    for run in good:
        assert folded.runs[str(run)].last_seq == 3
    kept = folded.runs[str(poisoned)]
    assert kept.last_seq == 1 and kept.retries == 0  # rolled back to before the poison
    (letter,) = folded.dlq
    assert letter.value() == encode_event(poison)
    headers = header_map(letter.headers())
    assert headers["runfold.reason"] == "unencodable-state"
    assert "cannot be written to agent-runs" in headers["runfold.error"]


def test_a_state_too_large_for_agent_runs_shrinks_before_its_offsets_commit(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    """agent-runs takes 20 kB records: a run with 50 kB of inputs and one whose reorder
    buffer holds 60 kB are shrunk (inputs marked, the buffer's gap declared), written, and
    after a restart the next events of both fold on from there: nothing lost."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource(
        "topic",
        unique_topics.runs,
        incremental_configs=[
            ConfigEntry("max.message.bytes", "20000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)
    config = ServiceConfig.on_topics({"bootstrap.servers": kafka_bootstrap}, unique_topics)
    deadline = time.monotonic() + 30
    while output_limits(config).runs != 20_000:  # the broker applies the change shortly
        assert time.monotonic() < deadline, "agent-runs never took max.message.bytes=20000"
        time.sleep(0.2)
    big_inputs, big_buffer = uuid.uuid4(), uuid.uuid4()
    first = [_started(big_inputs, {"doc": "x" * 50_000}), _tool(big_inputs, 2)]
    # seq 2 never comes: seqs 3..62 wait in the reorder buffer, 1 kB each.
    first += [_started(big_buffer)]
    first += [_tool(big_buffer, s, {"blob": "y" * 1000}) for s in range(3, 63)]
    _send(kafka_bootstrap, unique_topics.events, first)

    stats = _service(kafka_bootstrap, unique_topics, "oversize", FoldEdge.default()).run()

    assert stats.balanced() and stats.dlq == 0
    folded = read_output(kafka_bootstrap, unique_topics)
    marked = folded.runs[str(big_inputs)]
    assert marked.inputs == {TRUNCATED_MARKER: {"field": "inputs", "bytes": 50_010}}
    assert marked.last_seq == 2
    # The changelog's record (the whole state, the large one) was shrunk with it.
    assert folded.changelog[str(big_inputs)].inputs == marked.inputs
    flushed = folded.runs[str(big_buffer)]
    assert flushed.last_seq == 62 and not flushed.pending_events
    assert not folded.changelog[str(big_buffer)].pending_events
    gaps = [v for v in folded.violations if v.run_id == big_buffer]
    assert [(v.kind.value, v.first_seq, v.last_seq) for v in gaps] == [("gap", 2, 2)]
    assert flushed.inputs == {"q": 1}  # a small field is never marked

    # A restart restores the shrunk states; the next events fold on from them.
    _send(kafka_bootstrap, unique_topics.events, [_tool(big_inputs, 3), _tool(big_buffer, 63)])
    again = _service(kafka_bootstrap, unique_topics, "oversize", FoldEdge.default()).run()

    assert again.consumed == 2 and again.applied == 2 and again.dlq == 0
    folded = read_output(kafka_bootstrap, unique_topics)
    assert folded.runs[str(big_inputs)].last_seq == 3
    assert folded.runs[str(big_buffer)].last_seq == 63
