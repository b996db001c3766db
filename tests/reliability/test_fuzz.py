"""Fuzzing the input edge: arbitrary bytes never raise anything but the documented errors.

- ``schemas.codec.decode_event``: any bytes give an ``Event`` or a
  :class:`~schemas.errors.DecodeError` whose ``reason`` is one of ``DECODE_REASONS``.
- The service's per-record handling (``FoldService._fold_record``: decode, key check,
  fold, DLQ decision): any key and value end in exactly one outcome counter, and a
  rejected record is dead-lettered with the documented headers. The service's producer
  is replaced by a recorder: this is a unit test of the per-record decision (no broker);
  the same path runs against the real broker in ``test_bad_inputs.py``.
- Inputs are arbitrary bytes, and bytes mutated from valid events (the interesting
  space: right framing, wrong body).
- atheris (coverage-guided) runs the same decode property in a subprocess when installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.service.dlq import DLQ_HEADERS
from schemas import Event, GraphStarted, Timestamp, ToolCalled
from schemas.codec import decode_event, encode_event
from schemas.errors import DECODE_REASONS, DecodeError

# The service's offline stand-in lives with the service's tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "consumers" / "service"))

from service_fixtures import OfflineService  # noqa: E402

pytestmark = pytest.mark.unit

# Bounded for the default suite on a shared 2-core machine; `make test-reliability` and
# anyone hunting bugs raise them (RELIABILITY_FUZZ_EXAMPLES=20000 ...).
_EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "600"))

_RUN = uuid.UUID("0b7e4c3a-2f7d-4d0e-9a51-3c3f7d0c1e22")
_SEEDS = [
    encode_event(
        Event(
            run_id=_RUN,
            seq=1,
            timestamp=Timestamp(10**18),
            kind=GraphStarted(),
            payload={"agent_spec_digest": "a", "git_sha": "b", "inputs": [1, "x", None]},
        )
    ),
    encode_event(
        Event(
            run_id=_RUN,
            seq=2,
            timestamp=Timestamp(10**18 + 5),
            kind=ToolCalled(tool_name="search"),
            payload={"q": "ü", "n": 1.5},
        )
    ),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid event with a few bytes flipped, cut, or inserted."""
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "cut" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data = data[:at]
    return bytes(data)


_INPUTS = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=120).map(lambda b: b"\xc3\x01" + _SEEDS[0][2:10] + b),
    mutated(),
)


@settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_INPUTS)
def test_decode_event_raises_only_decode_error(data: bytes) -> None:
    try:
        event = decode_event(data)
    except DecodeError as exc:
        assert exc.reason in DECODE_REASONS, exc.reason
        assert str(exc)
        return
    assert isinstance(event, Event)
    assert event.seq >= 0


_KEYS = st.one_of(
    st.none(),
    st.just(str(_RUN).encode()),
    st.binary(max_size=40),
)


@settings(
    max_examples=max(50, _EXAMPLES // 3),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(st.tuples(_KEYS, st.one_of(st.none(), _INPUTS)), min_size=1, max_size=12))
def test_per_record_handling_accounts_every_record_once(
    records: list[tuple[bytes | None, bytes | None]],
) -> None:
    from confluent_kafka import Message

    offline = OfflineService()
    service = offline.service
    service._ensure_txn()
    for offset, (key, value) in enumerate(records):
        msg = Message(topic="ev", partition=0, offset=offset, key=key, value=value)
        service._fold_record(msg)
    stats = service._txn_stats
    assert stats.consumed == len(records)
    assert stats.balanced(), stats
    letters = offline.records("dlq")
    assert len(letters) == stats.dlq
    for letter in letters:
        names = [name for name, _ in letter["headers"]]
        assert names == list(DLQ_HEADERS)


_ATHERIS_SCRIPT = textwrap.dedent(
    """
    import sys
    import atheris
    with atheris.instrument_imports():
        from schemas.codec import decode_event
        from schemas.errors import DECODE_REASONS, DecodeError

    def one(data: bytes) -> None:
        try:
            decode_event(data)
        except DecodeError as exc:
            if exc.reason not in DECODE_REASONS:
                raise
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()
    """
)


@pytest.mark.slow  # instrumenting the imports alone takes ~30 s on a shared machine
def test_atheris_decode_event(tmp_path: Any) -> None:
    """Coverage-guided fuzzing of the decoder (atheris, when installed), seeded with events."""
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(_SEEDS):
        (corpus / f"seed{i}").write_bytes(seed)
    runs = os.environ.get("RELIABILITY_ATHERIS_RUNS", "30000")
    done = subprocess.run(
        [sys.executable, "-c", _ATHERIS_SCRIPT, f"-runs={runs}", "-max_len=512", str(corpus)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done" in done.stderr, done.stderr[-1000:]
