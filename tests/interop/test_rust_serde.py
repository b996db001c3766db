"""runfold's JSON against the real serde: the origin's ``run.rs`` compiled in ``interop/rust``.

Three claims, each checked both ways:

1. The committed vectors (``tests/vectors/serde_*.jsonl``) are exactly what the Rust
   binary writes today (regenerated when cargo is present).
2. Every line serde wrote comes back byte for byte through runfold:
   ``Event.from_json(line).to_json() == line`` (same for ``Run``). Needs no cargo.
3. Every line runfold writes is read by serde and written back unchanged.

The rules below were observed with serde 1.0.229, serde_json 1.0.154
(``preserve_order``), chrono 0.4.45, uuid 1.29.3 (pinned in ``interop/rust/Cargo.toml``):

* Timestamps (chrono ``DateTime<Utc>``): ``YYYY-MM-DDTHH:MM:SS`` + fraction + ``Z``; the
  fraction is omitted when zero, else 3, 6 or 9 digits, the fewest that are exact.
  Years 0..=9999 are zero-padded to 4 digits (``0999``); outside that chrono writes a
  sign and at least 5 digits (``+10000``, ``-0001``). A leap second is kept as ``:60``.
  Reading is lenient: ``t``/``z``/space, any offset (``+02:00``, ``-0130``), one-digit
  month/day, a fraction of any length (truncated past 9 digits, not rounded); no
  offset is an error. (Avro ``timestamp-nanos`` in an i64 only spans 1677..2262, the
  JSON spans years 1..9999: the codec must say so, not wrap.)
* Floats (serde_json >= 1.0.147 writes with zmij; <= 1.0.146 with ryu): the shortest
  digits that read back exactly, the same digits as Python's ``repr``. Plain decimal
  for 1e-5 <= |x| < 1e16, with ``.0`` on whole numbers (``1000000000000000.0``,
  ``0.00001``); else ``d[.ddd]e±N``: ``1e+16``, ``1.5e+300``, ``1e-7``, ``5e-324``;
  exponent never zero-padded. ryu (serde_json <= 1.0.146) wrote ``1e16``, no ``+``:
  the text depends on the serde_json version. Python's repr differs in the
  band 1e-5 <= |x| < 1e-4 (``1e-05``) and pads exponents (``1e-07``). ``-0.0`` stays.
* Reading floats: without serde_json's ``float_roundtrip`` feature (the origin does not
  enable it) the parser can land 1 ULP off: ``-1.5e-300`` reads back as
  ``-1.4999999999999998e-300``. So serde is not a fixed point of its own output for
  about 7 % of arbitrary doubles; with ``float_roundtrip`` it is. Out-of-range
  (``1e400``) is an error; underflow (``1e-400``) reads as ``0.0``.
* Integers: kept exact in ``u64`` (non-negative) or ``i64`` (negative); beyond that
  they become the nearest f64 (``18446744073709551616`` -> ``1.8446744073709552e+19``).
  ``-0`` reads as the float ``-0.0``. ``1E2`` reads as ``100.0``. NaN/Infinity
  cannot occur: serde rejects them in JSON text and never writes them.
* Strings: escaped are ``"``, ``\\``, ``\\b \\f \\n \\r \\t`` and other U+0000..U+001F
  as lower-case ``\\u00xx``; everything else raw UTF-8 (DEL, U+2028, ``/``, emoji).
  ``\\u`` escapes on input may be any case; a lone surrogate escape is an error.
  Lines must be split on ``\\n`` only: ``str.splitlines`` also breaks at U+2028 etc.
* Structure: fields in declaration order; ``None`` is ``null``; a missing ``Option``
  field reads as ``None`` but a missing non-Option one (``payload``, ``inputs``) is
  an error; unknown fields are dropped; a duplicated struct field is an error, while
  a duplicated payload key keeps its first position and its last value; UUIDs are
  read in any case/form (simple, braced, urn) and written lower-case hyphenated.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import EVENT_KINDS, Event, Run, RunStatus, Timestamp

pytestmark = pytest.mark.interop

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
EVENTS_VECTORS = VECTORS / "serde_events.jsonl"
RUNS_VECTORS = VECTORS / "serde_runs.jsonl"
# How the committed vectors were made: regenerating must reproduce them byte for byte.
EVENTS_ARGS = ("generate", "--seed", "10", "--count", "320")
RUNS_ARGS = ("generate-runs", "--seed", "10", "--count", "48")

NS = 1_000_000_000
FIRST_NS = -62_135_596_800 * NS  # 0001-01-01T00:00:00Z
LAST_NS = 253_402_300_800 * NS - 1  # 9999-12-31T23:59:59.999999999Z
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
RUN_ID = "1e54e07d-b232-4bc8-b4a3-772c15e7ea94"


def read_lines(path: Path) -> list[str]:
    """The lines of a JSON-lines file, split on ``\\n`` only (serde writes U+2028 raw)."""
    text = path.read_bytes().decode("utf-8")
    assert text.endswith("\n"), f"{path} must end with a newline"
    return text[:-1].split("\n")


def first_difference(expected: str, actual: str) -> str:
    """Where two lines part, with context, for a failure message a person can act on."""
    at = next((i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b), None)
    if at is None:
        at = min(len(expected), len(actual))
    return (
        f"first difference at char {at}:\n  serde:   ...{expected[max(0, at - 40) : at + 40]!r}\n"
        f"  runfold: ...{actual[max(0, at - 40) : at + 40]!r}"
    )


def same_but_float_ulps(expected: str, actual: str) -> bool:
    """True if the two JSON texts differ only in floats that are one ULP apart.

    This is how serde_json without ``float_roundtrip`` misreads: never more.
    Python's parser is correctly rounded, so it is the referee here.
    """

    def walk(a: Any, b: Any) -> bool:
        if isinstance(a, float) and isinstance(b, float):
            return a == b or abs(a - b) <= math.ulp(a)
        if type(a) is not type(b):
            return False
        if isinstance(a, list):
            return len(a) == len(b) and all(walk(x, y) for x, y in zip(a, b, strict=True))
        return bool(a == b)

    pairs = json.JSONDecoder(object_pairs_hook=lambda items: [list(kv) for kv in items]).decode
    return walk(pairs(expected), pairs(actual))


# -- 1. the committed vectors are what the Rust binary writes ---------------------------


@pytest.mark.parametrize(
    ("path", "args"), [(EVENTS_VECTORS, EVENTS_ARGS), (RUNS_VECTORS, RUNS_ARGS)]
)
def test_committed_vectors_are_what_serde_writes(
    serde_twin: Any, path: Path, args: tuple[str, ...]
) -> None:
    regenerated = serde_twin.run(args)
    assert regenerated == read_lines(path), (
        f"{path.name} is stale: regenerate with `runfold-serde {' '.join(args)} > {path}`"
    )


@pytest.mark.parametrize(("path", "what"), [(EVENTS_VECTORS, "events"), (RUNS_VECTORS, "runs")])
def test_serde_reads_back_its_own_vectors(serde_twin: Any, path: Path, what: str) -> None:
    lines = read_lines(path)
    # With exact float parsing serde is a fixed point of its own output...
    assert serde_twin.roundtrip(what, lines, exact_floats=True) == lines
    # ...without it (the origin's build) only floats may move, and by one ULP at most.
    for number, (line, answer) in enumerate(
        zip(lines, serde_twin.roundtrip(what, lines), strict=True), 1
    ):
        assert answer == line or same_but_float_ulps(line, answer), f"line {number}: {answer}"


def test_vectors_cover_every_kind_and_option() -> None:
    events = [json.loads(line) for line in read_lines(EVENTS_VECTORS)]
    kinds = {event["kind"]["type"] for event in events}
    assert kinds == set(EVENT_KINDS)
    exited = [e["kind"]["next_node"] for e in events if e["kind"]["type"] == "node_exited"]
    assert None in exited and any(isinstance(n, str) for n in exited)
    fractions = {
        len(e["timestamp"].rpartition(".")[2]) if "." in e["timestamp"] else 0 for e in events
    }
    assert fractions == {0, 4, 7, 10}  # digits + "Z": 0, 3, 6 and 9 fraction digits
    runs = [json.loads(line) for line in read_lines(RUNS_VECTORS)]
    assert {run["status"] for run in runs} == {status.value for status in RunStatus}
    for field in ("finished_at", "outputs", "final_state_digest"):
        assert {run[field] is None for run in runs} == {True, False}, field


# -- 2. serde -> runfold: byte for byte ---------------------------------------------------


def _vector_params(path: Path) -> list[Any]:
    params = []
    for number, line in enumerate(read_lines(path), 1):
        tag = json.loads(line).get("kind", {}).get("type") or json.loads(line).get("status")
        params.append(pytest.param(line, id=f"L{number}-{tag}"))
    return params


@pytest.mark.parametrize("line", _vector_params(EVENTS_VECTORS))
def test_serde_event_round_trips_through_runfold(line: str) -> None:
    written = Event.from_json(line).to_json()
    assert written == line, first_difference(line, written)


@pytest.mark.parametrize("line", _vector_params(RUNS_VECTORS))
def test_serde_run_round_trips_through_runfold(line: str) -> None:
    written = Run.from_json(line).to_json()
    assert written == line, first_difference(line, written)


# -- 3. runfold -> serde: accepted and written back unchanged -------------------------------


def _event(timestamp: int, kind: Any, payload: Any, seq: int = 1) -> Event:
    return Event(
        run_id=UUID(RUN_ID), seq=seq, timestamp=Timestamp(timestamp), kind=kind, payload=payload
    )


def _table_events() -> list[Event]:
    kinds = [cls.model_validate(fields) for cls, fields in _KIND_SAMPLES]
    stamps = [
        0,
        -1,
        1,
        1_714_564_800 * NS,
        1_714_564_800 * NS + 120_000_000,
        1_714_564_800 * NS + 123_400,
        1_714_564_800 * NS + 7,
        FIRST_NS,
        LAST_NS,
        -2_208_988_800 * NS + 999_999_999,
    ]
    payloads: list[Any] = [
        {},
        None,
        [],
        "text",
        0,
        {"z": 1, "a": [1.0, 0.1, 1e16, 1e-7, 1.5e300, 5e-324, -0.0]},
        {"floats": [123456789.123, 1e15, 1e21, 0.00001, 1.5e-5, 1e-5, 0.0001, 2.0 / 3.0]},
        {
            "ints": [U64_MAX, -(2**63), 2**53 + 1, -1, 0],
            "nested": {"b": None, "a": {"y": [True, False]}},
        },
        {"text": 'é 漢字 🚀 e\u0301 \n\t\x01\x1f\x7f " \\ / \u2028 \ufeff \U0010ffff', "": ""},
    ]
    return [
        _event(
            stamps[i % len(stamps)], kinds[i % len(kinds)], payloads[i % len(payloads)], seq=i + 1
        )
        for i in range(max(len(kinds), len(stamps), len(payloads)) * 2)
    ]


_TRICKY = 'ñ 🚀\n"\\\x00'
_KIND_SAMPLES: list[tuple[Any, dict[str, Any]]] = [
    (EVENT_KINDS["graph_started"], {}),
    (EVENT_KINDS["graph_completed"], {"iterations": U32_MAX, "duration_ms": U64_MAX}),
    (EVENT_KINDS["graph_failed"], {"error": _TRICKY}),
    (EVENT_KINDS["node_entered"], {"node_id": "n", "iteration": 0}),
    (EVENT_KINDS["node_exited"], {"node_id": "n", "next_node": None, "duration_ms": 1}),
    (EVENT_KINDS["node_exited"], {"node_id": "n", "next_node": _TRICKY, "duration_ms": 0}),
    (EVENT_KINDS["node_failed"], {"node_id": _TRICKY, "error": ""}),
    (EVENT_KINDS["tool_called"], {"tool_name": "search"}),
    (EVENT_KINDS["tool_returned"], {"tool_name": "search"}),
    (EVENT_KINDS["tool_failed"], {"tool_name": _TRICKY}),
    (EVENT_KINDS["checkpoint_saved"], {"checkpoint_id": "c", "node_id": "n"}),
    (EVENT_KINDS["checkpoint_restored"], {"checkpoint_id": "c", "node_id": _TRICKY}),
    (EVENT_KINDS["checkpoint_deleted"], {"checkpoint_id": "c"}),
    (EVENT_KINDS["state_updated"], {"node_id": "n", "keys_changed": ["b", "a", _TRICKY]}),
    (EVENT_KINDS["state_updated"], {"node_id": "n", "keys_changed": []}),
    (EVENT_KINDS["message_added"], {"role": "assistant", "content_length": U64_MAX}),
    (EVENT_KINDS["graph_interrupted"], {"reason": "cancelled", "node_id": "n"}),
    (EVENT_KINDS["node_retrying"], {"node_id": "n", "attempt": U32_MAX, "delay_ms": 250}),
]


def _table_runs() -> list[Run]:
    runs = []
    for index, status in enumerate(list(RunStatus) * 3):
        done = index % 2 == 1
        runs.append(
            Run(
                run_id=UUID(int=index * 0x1234_5678_9ABC_DEF0_1234 + 1),
                agent_spec_digest="sha256:" + "ab" * 32,
                git_sha=_TRICKY if index == 3 else "0" * 40,
                started_at=Timestamp(1_714_564_800 * NS + index),
                finished_at=Timestamp(LAST_NS) if done else None,
                status=status,
                inputs={"q": "2+2?", "n": [1e-7, 0.1]} if index % 3 else None,
                outputs={"answer": 4.0, "z": {}} if index % 4 == 1 else None,
                final_state_digest="sha256:" + "cd" * 32 if index % 3 == 2 else None,
            )
        )
    return runs


def _assert_serde_writes_back(serde_twin: Any, what: str, lines: list[str]) -> None:
    exact = serde_twin.roundtrip(what, lines, exact_floats=True)
    for line, answer in zip(lines, exact, strict=True):
        assert answer == line, first_difference(answer, line)
    # The origin's build may move a float by one ULP while reading (see the module docstring).
    for line, answer in zip(lines, serde_twin.roundtrip(what, lines), strict=True):
        assert answer == line or same_but_float_ulps(line, answer), first_difference(answer, line)


def test_runfold_events_from_a_table_come_back_from_serde_unchanged(serde_twin: Any) -> None:
    _assert_serde_writes_back(serde_twin, "events", [event.to_json() for event in _table_events()])


def test_runfold_runs_from_a_table_come_back_from_serde_unchanged(serde_twin: Any) -> None:
    _assert_serde_writes_back(serde_twin, "runs", [run.to_json() for run in _table_runs()])


_texts = st.text(max_size=12)
_u32 = st.integers(0, U32_MAX)
_u64 = st.integers(0, U64_MAX)
_stamps = st.one_of(
    st.integers(FIRST_NS, LAST_NS),
    st.integers(FIRST_NS // NS, LAST_NS // NS).map(lambda s: s * NS),
    st.integers(FIRST_NS // 1_000_000, LAST_NS // 1_000_000).map(lambda ms: ms * 1_000_000),
    st.integers(FIRST_NS // 1_000, LAST_NS // 1_000).map(lambda us: us * 1_000),
).map(Timestamp)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), U64_MAX)
    | st.integers(-(2**80), 2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_texts, inner, max_size=4),
    max_leaves=10,
)
_FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "iterations": _u32,
    "iteration": _u32,
    "attempt": _u32,
    "duration_ms": _u64,
    "delay_ms": _u64,
    "content_length": _u64,
    "next_node": st.none() | _texts,
    "keys_changed": st.lists(_texts, max_size=3),
}


def _kind_strategy(cls: Any) -> st.SearchStrategy[Any]:
    fields = {
        name: _FIELD_STRATEGIES.get(name, _texts) for name in cls.model_fields if name != "type"
    }
    return st.fixed_dictionaries(fields).map(cls.model_validate)


_events = st.builds(
    Event,
    run_id=st.uuids(),
    seq=_u64,
    timestamp=_stamps,
    kind=st.one_of([_kind_strategy(cls) for cls in EVENT_KINDS.values()]),
    payload=_json,
)
_runs = st.builds(
    Run,
    run_id=st.uuids(),
    agent_spec_digest=_texts,
    git_sha=_texts,
    started_at=_stamps,
    finished_at=st.none() | _stamps,
    status=st.sampled_from(RunStatus),
    inputs=_json,
    outputs=st.none() | _json,
    final_state_digest=st.none() | _texts,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_events, min_size=1, max_size=8))
def test_any_runfold_event_comes_back_from_serde_unchanged(
    serde_twin: Any, events: list[Event]
) -> None:
    _assert_serde_writes_back(serde_twin, "events", [event.to_json() for event in events])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs=st.lists(_runs, min_size=1, max_size=8))
def test_any_runfold_run_comes_back_from_serde_unchanged(serde_twin: Any, runs: list[Run]) -> None:
    _assert_serde_writes_back(serde_twin, "runs", [run.to_json() for run in runs])
