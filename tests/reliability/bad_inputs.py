"""The bad-input catalogue: every row is one input record and the outcome it must get.

Each case owns a run (``run_id = uuid5(case name)``), so its outcome can be read back
unambiguously: a DLQ record (found by source offset, with its reason code), a named
violation on the case's run, or the case's run state. A case may send valid records
before its *subject* (the last record), e.g. the first event of a duplicate.

Expected outcomes:

- ``dlq:<reason>``: the subject goes to the DLQ with header ``runfold.reason == <reason>``;
- ``violation:<kind>``: a violation of that kind is published for the case's run;
- ``applied``: the subject is folded into the run (``last_seq`` reaches its seq);
- ``duplicate``: counted as a duplicate in the run's state.
"""

from __future__ import annotations

import io
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fastavro
import fastavro.schema

from schemas import (
    Event,
    GraphCompleted,
    GraphStarted,
    NodeEntered,
    Timestamp,
    ToolCalled,
)
from schemas.catalog import default_catalog
from schemas.codec import encode_event
from schemas.records import model_to_record

__all__ = ["CATALOGUE", "Case", "TEN_MB", "case_run_id", "many_runs_records"]

TEN_MB = 10 * 1024 * 1024
_NS = uuid.UUID("6f1c9a52-5e9e-4c0a-9a63-6d0a1f3c7e11")
_T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

Record = tuple[bytes | None, bytes | None]


def case_run_id(name: str) -> uuid.UUID:
    """The run a case's records belong to."""
    return uuid.uuid5(_NS, name)


@dataclass(frozen=True)
class Case:
    """One row of the catalogue: records to send (the last is the subject) and its outcome."""

    name: str
    what: str
    records: list[Record]
    expect: str
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)

    @property
    def subject(self) -> Record:
        """The record whose outcome the row states."""
        return self.records[-1]


# -- building blocks ----------------------------------------------------------------------

_EVENT = default_catalog().current("Event")
_KIND_UNION = next(f["type"] for f in _EVENT.parsed["fields"] if f["name"] == "kind")
_TOOL_CALLED_INDEX = next(
    i for i, t in enumerate(_KIND_UNION) if isinstance(t, dict) and t["name"].endswith("ToolCalled")
)


def _started(run: uuid.UUID, ts: int = _T0) -> Event:
    return Event(
        run_id=run,
        seq=1,
        timestamp=Timestamp(ts),
        kind=GraphStarted(),
        payload={"agent_spec_digest": "spec", "git_sha": "sha", "inputs": {"q": 1}},
    )


def _tool(run: uuid.UUID, seq: int, ts: int | None = None, **payload: Any) -> Event:
    return Event(
        run_id=run,
        seq=seq,
        timestamp=Timestamp(_T0 + seq * 1000 if ts is None else ts),
        kind=ToolCalled(tool_name="search"),
        payload=payload or {"n": seq},
    )


def _record(event: Event) -> dict[str, Any]:
    return model_to_record(event, _EVENT.parsed)


def _raw(record: dict[str, Any], header: bytes | None = None) -> bytes:
    """fastavro's encoding of a record dict, bypassing the model's checks."""
    out = io.BytesIO()
    out.write(header if header is not None else b"\xc3\x01" + _EVENT.fingerprint)
    fastavro.schemaless_writer(out, _EVENT.parsed, record)
    return out.getvalue()


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _avro_string(raw: bytes) -> bytes:
    return _zigzag(len(raw)) + raw


def _hand_event(
    run: uuid.UUID,
    *,
    seq: int = 2,
    kind_index: int = _TOOL_CALLED_INDEX,
    tool: bytes = b"x",
    payload: bytes = b"{}",
    payload_len: int | None = None,
) -> bytes:
    """An Event body written byte by byte (for values no encoder would write)."""
    body = (
        _avro_string(str(run).encode())
        + _zigzag(seq)
        + _zigzag(_T0 + seq)
        + _zigzag(kind_index)
        + _avro_string(tool)
        + (_avro_string(payload) if payload_len is None else _zigzag(payload_len) + payload)
    )
    return b"\xc3\x01" + _EVENT.fingerprint + body


def _kind_index(name: str) -> int:
    return next(
        i for i, t in enumerate(_KIND_UNION) if isinstance(t, dict) and t["name"].endswith(name)
    )


def _raw_body(
    run: uuid.UUID,
    *,
    run_text: bytes | None = None,
    seq: bytes = b"\x04",  # zigzag(2)
    stamp: bytes | None = None,
    kind: bytes | None = None,
    payload: bytes = b"\x04{}",
) -> bytes:
    """An Event message from raw bytes per field (each a whole Avro value, length included):
    for varints, strings and unions no encoder writes."""
    text = str(run).encode() if run_text is None else run_text
    return (
        b"\xc3\x01"
        + _EVENT.fingerprint
        + _avro_string(text)
        + seq
        + (_zigzag(_T0 + 2) if stamp is None else stamp)
        + (_zigzag(_TOOL_CALLED_INDEX) + _avro_string(b"x") if kind is None else kind)
        + payload
    )


_PAST_64_BITS = b"\xff" * 9 + b"\x02"  # a tenth byte above 1
_ELEVEN_BYTES = b"\x82" + b"\x80" * 9 + b"\x00"


def _future_fingerprint() -> bytes:
    """The single-object fingerprint of an Event v2 with one more field (not kept here)."""
    schema = dict(_EVENT.parsed)
    schema["fields"] = [*schema["fields"], {"name": "tenant", "type": "string", "default": ""}]
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    return bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))[::-1]


def _key(run: uuid.UUID) -> bytes:
    return str(run).encode()


# -- the catalogue ------------------------------------------------------------------------

Builder = Callable[[uuid.UUID], list[Record]]


def _with_start(subject: Callable[[uuid.UUID], Record]) -> Builder:
    def build(run: uuid.UUID) -> list[Record]:
        return [(_key(run), encode_event(_started(run))), subject(run)]

    return build


_rng = random.Random(9)

_DEEP = "[" * 100_000 + "]" * 100_000

# fmt: off
_ROWS: list[tuple[str, str, str, Builder]] = [
    # --- framing ------------------------------------------------------------------------
    ("empty value", "value of zero bytes", "dlq:empty",
     lambda r: [(_key(r), b"")]),
    ("null value", "tombstone (value null)", "dlq:empty",
     lambda r: [(_key(r), None)]),
    ("random bytes", "200 random bytes, first byte not C3/00", "dlq:wrong-magic",
     lambda r: [(_key(r), b"\x7f" + _rng.randbytes(199))]),
    ("wrong magic C3 02", "single-object marker with version byte 02", "dlq:wrong-magic",
     lambda r: [(_key(r), b"\xc3\x02" + encode_event(_started(r))[2:])]),
    ("unknown fingerprint", "C3 01 + 8 random fingerprint bytes + body",
     "dlq:unknown-fingerprint",
     lambda r: [(_key(r), b"\xc3\x01" + _rng.randbytes(8) + encode_event(_started(r))[10:])]),
    ("future schema version", "fingerprint of an Event v2 (extra field) no reader keeps",
     "dlq:unknown-fingerprint",
     lambda r: [(_key(r), b"\xc3\x01" + _future_fingerprint() + encode_event(_started(r))[10:])]),
    ("Confluent schema id", "00 + schema id 4711 + body, no registry configured",
     "dlq:registry-unavailable",
     lambda r: [(_key(r), b"\x00\x00\x00\x12\x67" + encode_event(_started(r))[10:])]),
    ("Confluent header cut", "00 + two bytes", "dlq:registry-unavailable",
     lambda r: [(_key(r), b"\x00\x00\x01")]),
    ("header only", "C3 01 + fingerprint, no body", "dlq:truncated",
     lambda r: [(_key(r), b"\xc3\x01" + _EVENT.fingerprint)]),
    ("truncated Avro", "a valid event cut in the middle of its run_id", "dlq:truncated",
     lambda r: [(_key(r), encode_event(_started(r))[:25])]),
    ("truncated payload", "a valid event missing its last 3 bytes", "dlq:truncated",
     lambda r: [(_key(r), encode_event(_started(r))[:-3])]),
    ("trailing bytes", "a valid event followed by one extra byte", "dlq:invalid-body",
     lambda r: [(_key(r), encode_event(_started(r)) + b"\x00")]),
    ("unknown kind index", "union index 16 (there are 16 kinds, 0..15)", "dlq:invalid-body",
     lambda r: [(_key(r), _hand_event(r, kind_index=16))]),
    ("negative kind index", "union index -1", "dlq:invalid-body",
     lambda r: [(_key(r), _hand_event(r, kind_index=-1))]),
    ("invalid UTF-8 in a string", "tool_name bytes ff fe", "dlq:invalid-body",
     lambda r: [(_key(r), _hand_event(r, tool=b"\xff\xfe"))]),
    ("string length beyond the message", "payload string claims 1 GiB, 2 bytes follow",
     "dlq:truncated", lambda r: [(_key(r), _hand_event(r, payload_len=1 << 30))]),
    # --- values -------------------------------------------------------------------------
    ("payload not JSON", "payload string '{not json'", "dlq:invalid-json",
     lambda r: [(_key(r), _raw({**_record(_tool(r, 1)), "payload": "{not json"}))]),
    ("payload NaN", "payload 'NaN' (serde_json rejects it)", "dlq:invalid-json",
     lambda r: [(_key(r), _raw({**_record(_tool(r, 1)), "payload": "NaN"}))]),
    ("payload nested 100k deep", "payload '[[[[...]]]]' 100,000 levels", "dlq:invalid-json",
     lambda r: [(_key(r), _raw({**_record(_tool(r, 1)), "payload": _DEEP}))]),
    ("payload nested 128 deep", "payload 128 arrays deep (serde_json's limit: 127)",
     "dlq:invalid-json",
     lambda r: [(_key(r), _raw({**_record(_tool(r, 1)), "payload": "[" * 128 + "]" * 128}))]),
    ("payload objects 200 deep", "payload {\"a\":{\"a\":...}} 200 levels", "dlq:invalid-json",
     lambda r: [(_key(r), _raw({**_record(_tool(r, 1)), "payload": '{"a":' * 200 + "1"
                                + "}" * 200}))]),
    ("payload not UTF-8", "payload string bytes c3 28 (a broken 2-byte sequence)",
     "dlq:invalid-body", lambda r: [(_key(r), _raw_body(r, payload=b"\x04\xc3\x28"))]),
    ("payload empty", "payload string '' (serde_json: EOF while parsing)", "dlq:invalid-json",
     lambda r: [(_key(r), _raw({**_record(_tool(r, 1)), "payload": ""}))]),
    ("payload lone surrogate", "payload '\"\\ud800\"' (serde_json rejects it)", "dlq:invalid-json",
     lambda r: [(_key(r), _raw({**_record(_tool(r, 1)), "payload": '"\\ud800"'}))]),
    ("payload number beyond f64", "payload '1e400'", "dlq:invalid-json",
     lambda r: [(_key(r), _raw({**_record(_tool(r, 1)), "payload": "1e400"}))]),
    ("payload two values", "payload '{} {}'", "dlq:invalid-json",
     lambda r: [(_key(r), _raw({**_record(_tool(r, 1)), "payload": "{} {}"}))]),
    # --- varints past 64 bits (Python read them into wider ints) --------------------
    ("seq varint past 64 bits", "seq varint with a 10th byte 02", "dlq:invalid-body",
     lambda r: [(_key(r), _raw_body(r, seq=_PAST_64_BITS))]),
    ("seq varint of 11 bytes", "seq varint of 11 bytes (the 10th has its continuation bit)",
     "dlq:invalid-body", lambda r: [(_key(r), _raw_body(r, seq=_ELEVEN_BYTES))]),
    ("timestamp varint past 64 bits", "timestamp varint with a 10th byte 7f (year ~10^13)",
     "dlq:invalid-body",
     lambda r: [(_key(r), _raw_body(r, stamp=b"\xff" * 9 + b"\x7f"))]),
    ("u64 field past 64 bits", "message_added.content_length varint with a 10th byte 02",
     "dlq:invalid-body",
     lambda r: [(_key(r), _raw_body(r, kind=_zigzag(_kind_index("MessageAdded"))
                                    + _avro_string(b"user") + _PAST_64_BITS))]),
    ("array block size past 64 bits", "state_updated.keys_changed block byte size of 10 bytes, "
     "10th 02", "dlq:invalid-body",
     lambda r: [(_key(r), _raw_body(r, kind=_zigzag(_kind_index("StateUpdated"))
                                    + _avro_string(b"n") + _zigzag(-1) + _PAST_64_BITS
                                    + _avro_string(b"k") + b"\x00"))]),
    ("string length past 64 bits", "tool_name length varint with a 10th byte 02",
     "dlq:invalid-body",
     lambda r: [(_key(r), _raw_body(r, kind=_zigzag(_TOOL_CALLED_INDEX) + _PAST_64_BITS))]),
    # --- other malformed bodies -------------------------------------------------------
    ("negative string length", "tool_name length -3", "dlq:invalid-body",
     lambda r: [(_key(r), _raw_body(r, kind=_zigzag(_TOOL_CALLED_INDEX) + _zigzag(-3)))]),
    ("bad optional branch", "node_exited.next_node union branch 2 (there are 0 and 1)",
     "dlq:invalid-body",
     lambda r: [(_key(r), _raw_body(r, kind=_zigzag(_kind_index("NodeExited"))
                                    + _avro_string(b"n") + b"\x04" + _zigzag(1)))]),
    ("two records in one value", "a valid graph_started written twice into one value",
     "dlq:invalid-body",
     lambda r: [(_key(r), encode_event(_started(r)) + encode_event(_started(r))[10:])]),
    ("run_id not UTF-8", "36 run_id bytes with ff in them (key the same)", "dlq:invalid-body",
     lambda r: [(b"\xff" + _key(r)[1:], _raw_body(r, run_text=b"\xff" + _key(r)[1:]))]),
    ("run_id not a UUID", "run_id 'not-a-uuid' (key the same text)", "dlq:invalid-value",
     lambda r: [(b"not-a-uuid", _raw({**_record(_tool(r, 1)), "run_id": "not-a-uuid"}))]),
    ("run_id urn: + 32 digits", "run_id 'urn:' + 32 hex digits (uuid.UUID takes it, Rust's "
     "36-character parse does not; key the same)", "dlq:invalid-value",
     lambda r: [(b"urn:" + r.hex.encode(), _raw_body(r, run_text=b"urn:" + r.hex.encode()))]),
    ("run_id hyphens misplaced", "run_id '----' + 32 hex digits (key the same)",
     "dlq:invalid-value",
     lambda r: [(b"----" + r.hex.encode(), _raw_body(r, run_text=b"----" + r.hex.encode()))]),
    ("run_id empty", "run_id '' (key the same)", "dlq:invalid-value",
     lambda r: [(b"", _raw_body(r, run_text=b""))]),
    ("run_id upper-case", "run_id and key in upper case: a UUID, but not the key's canonical "
     "text", "dlq:key-mismatch",
     lambda r: [(str(r).upper().encode(), _raw_body(r, run_text=str(r).upper().encode()))]),
    ("seq >= 2^63", "seq 2^63 as it wraps in an Avro long (-2^63)", "dlq:invalid-value",
     lambda r: [(_key(r), _raw({**_record(_tool(r, 1)), "seq": -(2**63)}))]),
    ("seq -1", "negative seq", "dlq:invalid-value",
     lambda r: [(_key(r), _raw({**_record(_tool(r, 1)), "seq": -1}))]),
    ("seq 0", "graph_started, then seq 0 (seqs start at 1)", "dlq:invalid-value",
     _with_start(lambda r: (_key(r), encode_event(_tool(r, 0))))),
    ("u32 negative", "node_entered.iteration = -1", "dlq:invalid-value",
     lambda r: [(_key(r), _raw_body(r, kind=_zigzag(_kind_index("NodeEntered"))
                                    + _avro_string(b"n") + _zigzag(-1)))]),
    ("u64 negative", "graph_completed.duration_ms = -1", "dlq:invalid-value",
     lambda r: [(_key(r), _raw_body(r, kind=_zigzag(_kind_index("GraphCompleted"))
                                    + _zigzag(1) + _zigzag(-1)))]),
    ("u32 overflow", "node_entered.iteration = 2^32 (Rust u32)", "dlq:invalid-value",
     lambda r: [(_key(r), _raw({**_record(Event(run_id=r, seq=1, timestamp=Timestamp(_T0),
        kind=NodeEntered(node_id="n", iteration=1), payload={})),
        "kind": ("runfold.NodeEntered", {"node_id": "n", "iteration": 2**32})}))]),
    # --- keys ---------------------------------------------------------------------------
    ("null key", "a valid graph_started without a key", "dlq:missing-key",
     lambda r: [(None, encode_event(_started(r)))]),
    ("key != run_id", "key names another run", "dlq:key-mismatch",
     lambda r: [(str(uuid.uuid5(r, "other")).encode(), encode_event(_started(r)))]),
    ("key upper-case", "key is the run_id in upper case", "dlq:key-mismatch",
     lambda r: [(str(r).upper().encode(), encode_event(_started(r)))]),
    ("key not UTF-8", "key bytes ff 00 ff", "dlq:key-mismatch",
     lambda r: [(b"\xff\x00\xff", encode_event(_started(r)))]),
    ("key 100 kB", "a 100,000-byte key", "dlq:key-mismatch",
     lambda r: [(b"k" * 100_000, encode_event(_started(r)))]),
    # --- sequence and time (named violations or applied) --------------------------------
    ("seq 2^63-1", "graph_started, then seq 2^63-1 (held in the reorder buffer, no bound reached)",
     "buffered",
     _with_start(lambda r: (_key(r), encode_event(_tool(r, 2**63 - 1, ts=_T0 + 7))))),
    ("duplicate", "graph_started, seq 2, seq 2 again byte-identical", "duplicate",
     lambda r: [(_key(r), encode_event(_started(r))), (_key(r), encode_event(_tool(r, 2))),
                (_key(r), encode_event(_tool(r, 2)))]),
    ("conflict", "seq 2 again with other content", "violation:conflict",
     lambda r: [(_key(r), encode_event(_started(r))), (_key(r), encode_event(_tool(r, 2))),
                (_key(r), encode_event(_tool(r, 2, other=True)))]),
    ("after terminal", "graph_completed at seq 2, then seq 3", "violation:after_terminal",
     lambda r: [(_key(r), encode_event(_started(r))),
                (_key(r), encode_event(Event(run_id=r, seq=2, timestamp=Timestamp(_T0 + 5),
                 kind=GraphCompleted(iterations=1, duration_ms=0), payload={}))),
                (_key(r), encode_event(_tool(r, 3)))]),
    ("missing start", "first event is seq 1 tool_called", "violation:missing_start",
     lambda r: [(_key(r), encode_event(_tool(r, 1)))]),
    ("negative timestamp", "graph_started at -1 ns (1969)", "applied",
     lambda r: [(_key(r), encode_event(_started(r, ts=-1)))]),
    ("absurd timestamp", "graph_started at 2^63-1 ns (year 2262)", "applied",
     lambda r: [(_key(r), encode_event(_started(r, ts=2**63 - 1)))]),
    ("oldest timestamp", "graph_started at -2^63 ns (year 1677)", "applied",
     lambda r: [(_key(r), encode_event(_started(r, ts=-(2**63))))]),
    ("10 MB payload", "graph_started, then a tool_called with a 10 MB payload string", "applied",
     _with_start(lambda r: (_key(r), encode_event(_tool(r, 2, blob="x" * TEN_MB))))),
]
# fmt: on


def _build() -> list[Case]:
    cases = []
    for name, what, expect, build in _ROWS:
        run = case_run_id(name)
        cases.append(Case(name=name, what=what, records=build(run), expect=expect, run_id=run))
    return cases


CATALOGUE: list[Case] = _build()
"""Every row, in the order the records are sent."""


def many_runs_records(count: int, seed: int = 3) -> list[Record]:
    """``count`` distinct runs, one graph_started each (the "huge number of runs" row)."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        run = uuid.UUID(int=rng.getrandbits(128), version=4)
        records.append((_key(run), encode_event(_started(run))))
    return records
