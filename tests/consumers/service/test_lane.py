"""The batch lane folds exactly what the general path folds, and reads nothing it refuses.

The lane is a C decoder (:mod:`consumers.service._lane`) that hands plain values to
the one next-event rule (:func:`consumers.next_event.fold_next`); the general path
(decode with :mod:`schemas.codec`, :func:`~consumers.apply_event`) is its oracle:

- every record the decoder reads, damaged ones included, decodes with the codec to the
  same seq, timestamp, tag and run id, and its digest is the general path's;
- the same records through :meth:`FoldService._fold_batch` with and without the lane
  give the same states, counts, offsets, dirty runs and records produced.
"""

from __future__ import annotations

import os
import random
import shutil
import sysconfig
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message
from service_fixtures import OfflineService, RecordingProducer

from consumers import apply_event
from consumers.digest import content_digest
from consumers.next_event import COUNTED_KINDS
from consumers.service import FoldService
from consumers.service.edge import FoldEdge
from consumers.service.lane import LaneDecoder, compiled_lane_available, decoder
from consumers.state import RunState
from producers import FaultRates, Fleet, FleetConfig
from schemas import avro_binary, serde
from schemas.codec import EventCodec, configure_registry, current_event_header, decode_event
from schemas.errors import RunfoldError
from schemas.model import EVENT_KINDS

pytestmark = pytest.mark.unit

_PURE = os.environ.get("RUNFOLD_PURE_PYTHON", "") not in ("", "0")
needs_c = pytest.mark.skipif(
    not compiled_lane_available(), reason="the C decoder is off or not built"
)


def test_the_decoder_is_built_where_a_compiler_is() -> None:
    """The extension is optional for users; on a machine with a compiler (CI) its absence
    is a failure, not a silent fall back to the slower general path."""
    if _PURE:
        pytest.skip("RUNFOLD_PURE_PYTHON is set: the general path alone is wanted")
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) on this machine")
    assert compiled_lane_available(), "consumers.service._lane did not build: run `make install`"
    assert decoder() is not None


def _fold_all(
    records: list[tuple[int, bytes | None, bytes | None]], *, lane: bool, batch: int = 500
) -> tuple[FoldService, RecordingProducer]:
    offline = OfflineService(FoldEdge(lane=lane))
    service = offline.service
    rng = random.Random(len(records))
    msgs = []
    for offset, (partition, key, value) in enumerate(records):
        if rng.random() < 0.01:  # consumer error events (partition EOF) among the records
            eof = KafkaError(KafkaError._PARTITION_EOF)
            msgs.append(Message(topic="ev", partition=partition, error=eof))
        msgs.append(Message(topic="ev", partition=partition, offset=offset, key=key, value=value))
    for start in range(0, len(msgs), batch):
        service._fold_batch(msgs[start : start + batch])
    return service, offline.producer


def _fleet_records(runs: int, seed: int) -> list[tuple[int, bytes | None, bytes | None]]:
    rates = FaultRates(gap=0.1, dup=0.1, reorder=0.1, after_end=0.1, conflict=0.1, corrupt=0.1)
    fleet = Fleet(FleetConfig(runs=runs, agents=6, seed=seed, faults=rates))
    return [(hash(key) % 3, key, value) for key, value, _ in fleet.records()]


def _assert_same(
    lane: FoldService,
    general: FoldService,
    lane_out: RecordingProducer,
    general_out: RecordingProducer,
) -> None:
    assert lane._txn_stats == general._txn_stats
    assert lane._txn_stats.balanced()
    assert lane._store.runs.keys() == general._store.runs.keys()
    for partition, runs in general._store.runs.items():
        assert lane._store.runs[partition].keys() == runs.keys()
        for key, state in runs.items():
            other = lane._store.runs[partition][key]
            assert other == state, key
            assert lane.edge.encode_state(other) == general.edge.encode_state(state)
    assert lane._dirty == general._dirty
    assert lane._next_offsets == general._next_offsets
    assert lane_out.sent == general_out.sent


@pytest.mark.parametrize(("seed", "batch"), [(1, 500), (2, 500), (3, 7)])
def test_a_fleet_with_every_fault_folds_the_same_with_and_without_the_lane(
    seed: int, batch: int
) -> None:
    records = _fleet_records(150, seed)
    with_lane, lane_out = _fold_all(records, lane=True, batch=batch)
    general, general_out = _fold_all(records, lane=False, batch=batch)
    _assert_same(with_lane, general, lane_out, general_out)
    if compiled_lane_available():
        # The lane did read most records (else this test proves little).
        lane = decoder()
        assert lane is not None
        read = sum(1 for _, key, value in records if key and value and lane.read_value(key, value))
        assert read > len(records) // 2


def test_the_service_digest_is_the_content_digest_in_both_paths() -> None:
    records = _fleet_records(20, 3)
    with_lane, _ = _fold_all(records, lane=True)
    for _, key, value in records:
        if value is None or key is None:
            continue
        try:
            event = decode_event(value)
        except RunfoldError:
            continue
        state = with_lane._store.runs[hash(key) % 3][key]
        window = state.digests
        slot = window[event.seq % len(window)]
        in_window = state.last_seq - len(window) < event.seq <= state.last_seq
        conflicting = event.kind.type == "tool_called" and "conflict" in str(event.payload)
        if slot and in_window and not conflicting:
            assert slot == content_digest(event)


# --- damaged records -------------------------------------------------------------------


def _oracle(key: bytes, value: bytes) -> tuple[int, int, str, int] | None:
    """What the general path reads of a record: (seq, timestamp, tag, digest), or None
    when the codec refuses it or its run_id is not the key."""
    try:
        event = decode_event(value)
    except RunfoldError:
        return None
    if str(event.run_id).encode() != key:
        return None
    return event.seq, int(event.timestamp), event.kind.type, content_digest(event)


def _assert_read_as_the_codec_reads(lane: LaneDecoder, key: bytes, value: bytes) -> bool:
    """If the decoder reads the record, the codec reads the same; returns whether it did."""
    values = lane.read_value(key, value)
    if values is None:
        return False
    assert values == _oracle(key, value), value.hex()
    assert values[2] in COUNTED_KINDS
    return True


def _prepared_runs() -> list[tuple[RunState, bytes, bytes]]:
    """(state before, key, the next record) for lane-eligible records of a small fleet."""
    fleet = Fleet(FleetConfig(runs=40, agents=4, seed=9))
    states: dict[bytes, RunState] = {}
    out = []
    for offset, (key, value, meta) in enumerate(fleet.records()):
        if meta.fault is not None:
            continue
        event = decode_event(value)
        state = states.get(key)
        if state is not None and event.kind.type in COUNTED_KINDS:
            out.append((state.copy(), key, value))
        state, _ = apply_event(state, event)
        state.source_offset = offset
        states[key] = state
    return out


def _mutations(value: bytes, rng: random.Random) -> list[bytes]:
    body = 10 + 37  # header and run_id: the lane compares those bytes exactly
    out = [value[:-1], value + b"\x00", value[: body + 3]]
    for _ in range(12):
        at = rng.randrange(body, len(value))
        out.append(value[:at] + bytes([rng.randrange(256)]) + value[at + 1 :])
        out.append(value[:at] + bytes([value[at] ^ (1 << rng.randrange(8))]) + value[at + 1 :])
        out.append(value[:at] + value[at + 1 :])
        out.append(value[:at] + bytes([rng.randrange(256)]) + value[at:])
    return out


@needs_c
def test_the_decoder_reads_no_damaged_record_otherwise_than_the_codec() -> None:
    lane = decoder(cache_size=4)  # a tiny payload cache: evictions change nothing
    assert lane is not None
    rng = random.Random(5)
    read = refused = 0
    for _, key, value in _prepared_runs()[:400]:
        for damaged in [value, *_mutations(value, rng)]:
            if _assert_read_as_the_codec_reads(lane, key, damaged):
                read += 1
            else:
                refused += 1
    assert read > 400 and refused > 400


@needs_c
def test_the_decoder_reads_fleet_records_as_the_codec_does() -> None:
    lane = decoder()
    assert lane is not None
    records = _fleet_records(100, 4)
    read = sum(
        _assert_read_as_the_codec_reads(lane, key, value)
        for _, key, value in records
        if key and value
    )
    assert read > len(records) // 2
    # read() over messages gives each record's values with its position, errors None.
    msgs = [
        Message(topic="ev", partition=p, offset=o, key=k, value=v)
        for o, (p, k, v) in enumerate(records)
    ]
    msgs.append(Message(topic="ev", partition=0, error=KafkaError(KafkaError._PARTITION_EOF)))
    for msg, values in zip(msgs, lane.read(msgs), strict=True):
        if values is None:
            continue
        partition, key, offset, *rest = values
        assert (partition, key, offset) == (msg.partition(), msg.key(), msg.offset())
        assert tuple(rest) == _oracle(msg.key(), msg.value())


@needs_c
def test_a_fault_free_fleet_takes_the_lane_for_every_counted_kind_and_no_other() -> None:
    """What ``bench.lane_bench`` measures: the fleet's payloads of counted kinds are
    canonical text, so all of those records take the lane; the others (``graph_*``) take
    the general path by their kind, whatever their payload's key order."""
    lane = decoder()
    assert lane is not None
    fleet = Fleet(FleetConfig(runs=150, agents=6, seed=5))
    taken: dict[bool, set[str]] = {True: set(), False: set()}
    for key, value, _ in fleet.records():
        tag = decode_event(value).kind.type
        assert (lane.read_value(key, value) is not None) == (tag in COUNTED_KINDS), tag
        taken[tag in COUNTED_KINDS].add(tag)
    assert taken[True] == set(COUNTED_KINDS)
    assert taken[False] == {"graph_started", "graph_completed", "graph_failed",
                            "graph_interrupted"}


@needs_c
@pytest.mark.parametrize(
    ("tag", "fields", "payload"),
    [
        ("node_entered", {"node_id": "n", "iteration": 2**32}, "{}"),  # u32 overflow
        ("node_entered", {"node_id": "n", "iteration": -1}, "{}"),
        ("node_retrying", {"node_id": "n", "attempt": 1, "delay_ms": -5}, "{}"),  # u64 < 0
        ("node_exited", {"node_id": "é" * 40, "next_node": None, "duration_ms": 1}, "{}"),
        ("tool_called", {"tool_name": "t"}, '{"a": NaN}'),
        ("tool_called", {"tool_name": "t"}, "{} x"),
        ("tool_called", {"tool_name": "t"}, '"\\ud800"'),
        ("state_updated", {"node_id": "n", "keys_changed": ["a", "b"]}, "[1, 2.5, null]"),
        ("graph_completed", {"iterations": 1, "duration_ms": 2}, "{}"),  # not a counted kind
        ("message_added", {"role": "r", "content_length": 2**64}, "{}"),  # varint past 64 bits
        ("message_added", {"role": "r", "content_length": 2**63 - 1}, "{}"),
        ("tool_called", {"tool_name": "t"}, "[" * 127 + "]" * 127),
        ("tool_called", {"tool_name": "t"}, "[" * 128 + "]" * 128),  # deeper than serde_json
        ("tool_called", {"tool_name": "t"}, '{"a":' * 200 + "1" + "}" * 200),
    ],
)
@pytest.mark.parametrize("seq", [1, 0, -1, 2**63 - 1, 2**63, -(2**63)])
def test_edge_values_are_read_only_as_the_codec_reads_them(
    tag: str, fields: dict[str, Any], payload: str, seq: int
) -> None:
    lane = decoder()
    assert lane is not None
    _, key, value = _prepared_runs()[0]
    body = bytearray(value[: 10 + 37])
    body += _raw_long(seq) + avro_binary.write_long(1_700_000_000_000_000_000)
    body += avro_binary.write_long(list(EVENT_KINDS).index(tag))
    for name, field in EVENT_KINDS[tag].model_fields.items():
        if name == "type":
            continue
        item = fields[name]
        if field.annotation is int:
            body += _raw_long(item)
        elif field.annotation is str:
            body += _raw_string(item)
        elif item is None:
            body += b"\x00"
        elif isinstance(item, str):
            body += b"\x02" + _raw_string(item)
        else:
            body += _raw_long(len(item)) + b"".join(map(_raw_string, item)) + b"\x00"
    body += _raw_string(payload)
    read = _assert_read_as_the_codec_reads(lane, key, bytes(body))
    # It reads exactly what the codec reads, of the counted kinds (the codec refuses a seq
    # outside 1 ..= 2**63 - 1 and any varint past 64 bits, and so does the lane), when the
    # payload is canonical JSON (else the bytes' digest is not the content digest).
    assert read == (
        _oracle(key, bytes(body)) is not None and tag in COUNTED_KINDS and _canonical(payload)
    )


def _canonical(payload: str) -> bool:
    try:
        return serde.canonical_dumps(serde.loads(payload)) == payload
    except ValueError:
        return False


@needs_c
def test_what_the_codec_refuses_at_the_wire_the_lane_refuses_too() -> None:
    """Varints past 64 bits anywhere (seq, timestamp, a block's byte size), run ids that
    are not the canonical UUID text of the key, trailing bytes: never read by the lane."""
    lane = decoder()
    assert lane is not None
    _, key, value = _prepared_runs()[0]
    head, run_id = value[:11], value[11:47]
    rest = value[47:]
    seq_end = 1 if rest[0] < 0x80 else None
    assert seq_end is not None, "the first prepared record has a one-byte seq"
    stamp = avro_binary.read_long(rest, 1)[1]
    kind = list(EVENT_KINDS).index("state_updated")
    wide_block = (
        _raw_long(-1) + b"\xff" * 9 + b"\x02" + _raw_string("k") + b"\x00"  # size past 64 bits
    )
    refused = {
        "seq past 64 bits": head + run_id + b"\xff" * 9 + b"\x02" + rest[1:],
        "timestamp past 64 bits": head + run_id + rest[:1] + b"\xff" * 9 + b"\x7f" + rest[stamp:],
        "array block size past 64 bits": head
        + run_id
        + rest[:stamp]
        + _raw_long(kind)
        + _raw_string("n")
        + wide_block
        + _raw_string("{}"),
        "trailing byte": value + b"\x00",
    }
    for name, data in refused.items():
        assert lane.read_value(key, data) is None, name
        assert _oracle(key, data) is None, name
    # The same block with a byte size that fits is read by the codec; not by the lane, as
    # the writer never writes one (its bytes are not the canonical body the content
    # digest is defined on). The writer's one block is read by both.
    fitting = head + run_id + rest[:stamp] + _raw_long(kind) + _raw_string("n")
    sized = fitting + _raw_long(-1) + _raw_long(2) + _raw_string("k") + b"\x00"
    assert _oracle(key, sized + _raw_string("{}")) is not None
    assert lane.read_value(key, sized + _raw_string("{}")) is None
    one_block = fitting + _raw_long(1) + _raw_string("k") + b"\x00" + _raw_string("{}")
    assert _assert_read_as_the_codec_reads(lane, key, one_block)
    # A non-minimal varint (seq 1 as 0x82 0x00): the codec reads it, the lane leaves it.
    padded = head + run_id + b"\x82\x00" + rest[1:]
    assert _oracle(key, padded) is not None
    assert lane.read_value(key, padded) is None
    text = run_id.decode()
    for other in (text.upper(), "urn:" + text.replace("-", ""), "----" + text.replace("-", "")):
        data = head + other.encode() + rest
        assert lane.read_value(other.encode(), data) is None, other
        assert _oracle(other.encode(), data) is None, other


def _raw_long(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63) if n >= -(2**63) else 0
    out = bytearray()
    while True:
        if z < 0x80:
            out.append(z)
            return bytes(out)
        out.append(z & 0x7F | 0x80)
        z >>= 7


def _raw_string(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return _raw_long(len(data)) + data


def test_the_lane_is_off_for_a_schema_version_it_was_not_written_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert EventCodec().current.fingerprint == avro_binary.PINNED["Event"]
    monkeypatch.setitem(avro_binary.PINNED, "Event", b"\x00" * 8)
    assert decoder() is None


def test_pure_python_is_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNFOLD_PURE_PYTHON", "1")
    assert not compiled_lane_available()
    assert decoder() is None
    assert FoldEdge().lane is None


class _FakeMessage:
    """Message-like without confluent_kafka: the decoder calls the methods generically."""

    def __init__(self, msg: Message) -> None:
        self._msg = msg

    def error(self) -> Any:
        return self._msg.error()

    def partition(self) -> Any:
        return self._msg.partition()

    def key(self) -> Any:
        return self._msg.key()

    def value(self) -> Any:
        return self._msg.value()

    def offset(self) -> Any:
        return self._msg.offset()


class _MessageSubclass(Message):  # type: ignore[misc]
    """A subclass has a __dict__: the decoder must not call its methods straight."""


@needs_c
def test_any_message_type_is_read_alike() -> None:
    lane = decoder()
    assert lane is not None
    records = _fleet_records(10, 6)
    msgs = [
        Message(topic="ev", partition=p, offset=o, key=k, value=v)
        for o, (p, k, v) in enumerate(records)
    ]
    expected = lane.read(msgs)
    assert any(expected)
    fakes: list[Any] = [_FakeMessage(m) for m in msgs]
    assert lane.read(fakes) == expected
    subclassed: list[Any] = [
        _MessageSubclass(topic="ev", partition=p, offset=o, key=k, value=v)
        for o, (p, k, v) in enumerate(records)
    ]
    assert lane.read(subclassed) == expected
    mixed = [fakes[i] if i % 2 else msgs[i] for i in range(len(msgs))]
    assert lane.read(mixed) == expected
    with pytest.raises(TypeError):
        lane.read(tuple(msgs))  # type: ignore[arg-type]


# --- Confluent framing: the same body, a schema id learned from the general path ---------


@pytest.fixture
def registry() -> Iterator[None]:
    """A mock schema registry for the module-level codec (encode and decode alike)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    configure_registry(SchemaRegistryClient.new_client({"url": "mock://lane-confluent"}))
    yield
    configure_registry(None)


def _confluent_records(runs: int, seed: int) -> list[tuple[int, bytes | None, bytes | None]]:
    rates = FaultRates(gap=0.1, dup=0.1, reorder=0.1, after_end=0.1, conflict=0.1, corrupt=0.1)
    fleet = Fleet(FleetConfig(runs=runs, agents=6, seed=seed, faults=rates), framing="confluent")
    return [(hash(key) % 3, key, value) for key, value, _ in fleet.records()]


@needs_c
@pytest.mark.usefixtures("registry")
def test_a_learned_confluent_schema_id_is_read_as_the_codec_reads_it() -> None:
    lane = decoder()
    assert lane is not None
    records = [(k, v) for _, k, v in _confluent_records(60, 7) if k and v]
    framed = sum(v[:1] == b"\x00" for _, v in records)
    assert framed > 0.9 * len(records)  # all but the corrupt ones the fleet was asked for
    assert not any(lane.read_value(k, v) for k, v in records)  # no id learned yet
    header = next(h for _, v in records if (h := current_event_header(v)) is not None)
    assert header is not None and len(header) == 5
    assert lane.learn(header)
    assert lane.learn(header)  # already known: still True, not stored twice
    rng = random.Random(3)
    read = sum(_assert_read_as_the_codec_reads(lane, k, v) for k, v in records)
    assert read > len(records) // 2
    for key, value in [(k, v) for k, v in records if len(v) > 60][:200]:
        for damaged in _mutations(value, rng):
            _assert_read_as_the_codec_reads(lane, key, damaged)
    with pytest.raises(ValueError):
        lane.learn(b"\xc3\x01\x00\x00\x00")  # not a Confluent header


@needs_c
@pytest.mark.usefixtures("registry")
def test_a_confluent_fleet_folds_the_same_with_and_without_the_lane() -> None:
    records = _confluent_records(120, 8)
    with_lane, lane_out = _fold_all(records, lane=True)
    general, general_out = _fold_all(records, lane=False)
    _assert_same(with_lane, general, lane_out, general_out)
    lane = with_lane.edge.lane
    assert lane is not None  # it learned the id from the first record it could not read
    read = sum(1 for _, k, v in records if k and v and lane.read_value(k, v))
    assert read > len(records) // 2
