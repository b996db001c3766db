"""The C lane's own pieces equal what the Python lane uses, and its call shape holds.

``consumers._fastlane`` checks UTF-8, computes CRC-32 and recognises certainly-valid
payload JSON by itself; each is compared here with the Python it stands in for
(``bytes.decode``, ``zlib.crc32``, ``serde.loads``) on generated inputs. Then the
lane with other message types, the switch back to Python and argument errors.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from confluent_kafka import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.fastlane import batch_lane, compiled_lane_available
from consumers.state import RunState
from schemas import serde

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(not compiled_lane_available(), reason="consumers._fastlane not built"),
]


def _module() -> Any:
    import consumers._fastlane

    return consumers._fastlane


def _decodes(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


_UTF8_EDGES = [
    b"",
    b"ascii only, longer than eight bytes",
    "é€𐍈".encode(),
    b"\xc0\x80",  # overlong NUL
    b"\xc1\xbf",
    b"\xe0\x80\x80",  # overlong
    b"\xe0\xa0\x80",  # U+0800, the first 3-byte
    b"\xed\x9f\xbf",  # U+D7FF
    b"\xed\xa0\x80",  # a surrogate
    b"\xef\xbf\xbf",
    b"\xf0\x8f\xbf\xbf",  # overlong
    b"\xf0\x90\x80\x80",  # U+10000
    b"\xf4\x8f\xbf\xbf",  # U+10FFFF
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xff",
    b"abcdefg\xc3",  # truncated at the end
    b"abcdefgh\x80",
]


@pytest.mark.parametrize("data", _UTF8_EDGES)
def test_utf8_check_is_bytes_decode_on_edges(data: bytes) -> None:
    assert _module().utf8_valid(data) == _decodes(data)


@given(st.binary(max_size=40) | st.text(max_size=20).map(str.encode))
@settings(max_examples=400)
def test_utf8_check_is_bytes_decode(data: bytes) -> None:
    assert _module().utf8_valid(data) == _decodes(data)


@given(st.binary(max_size=3).flatmap(lambda head: st.just(head) | st.sampled_from(_UTF8_EDGES)))
def test_utf8_check_on_every_short_sequence(data: bytes) -> None:
    assert _module().utf8_valid(data) == _decodes(data)


def test_utf8_check_on_every_two_and_three_byte_lead() -> None:
    module = _module()
    for lead in range(0x80, 0x100):
        for second in range(0x70, 0x100):
            for data in (
                bytes([lead, second]),
                bytes([lead, second, 0x80]),
                bytes([lead, second, 0x80, 0x80]),
            ):
                assert module.utf8_valid(data) == _decodes(data), data.hex()


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_crc32_is_zlibs(data: bytes) -> None:
    assert _module().crc32(data) == zlib.crc32(data)


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


def _loads_ok(data: bytes) -> bool:
    try:
        serde.loads(data.decode())
    except (ValueError, RecursionError):
        return False
    return True


@given(_JSON_VALUES, st.sampled_from(["serde", "python", "python-ascii"]))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_json_taken_as_valid_is_valid_for_serde(value: Any, writer: str) -> None:
    if writer == "serde":
        text = serde.dumps(value)
    else:
        text = json.dumps(value, ensure_ascii=writer == "python-ascii")
    data = text.encode("utf-8", "surrogatepass")
    if _module().json_simple(data):
        assert _loads_ok(data), data


@given(_JSON_VALUES, st.data())
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_damaged_json_is_never_taken_when_serde_refuses_it(value: Any, data: st.DataObject) -> None:
    text = bytearray(serde.dumps(value).encode())
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        piece = data.draw(
            st.sampled_from(
                [
                    b"",
                    b",",
                    b"]",
                    b"}",
                    b"{",
                    b"[",
                    b'"',
                    b"\\",
                    b":",
                    b" ",
                    b"0",
                    b"-",
                    b".",
                    b"e",
                    b"\x01",
                    b"\xff",
                    b"nul",
                    b"\\u",
                    b"NaN",
                ]
            )
        )
        if data.draw(st.booleans()) and at < len(text):
            text[at : at + 1] = piece
        else:
            text[at:at] = piece
    damaged = bytes(text)
    if _module().json_simple(damaged):
        assert _loads_ok(damaged), damaged


@pytest.mark.parametrize(
    ("text", "simple"),
    [
        (b"{}", True),
        (b'{"input_tokens":2241}', True),
        (b'{"args":{"query":"plan-1"},"n":[1,-2,3.25,null,true,false]}', True),
        (b'"tab\\tquote\\"slash\\/"', True),
        (b"-0", True),
        (b"123456789012345678", True),
        (b"1234567890123456789", False),  # may be beyond i64: ask serde.loads
        (b"1e5", False),
        (b'"\\u00e9"', False),
        (b"{ }", False),
        (b"[1,]", False),
        (b"01", False),
        (b"NaN", False),
        (b'{"a":1}x', False),
        (b'"\x01"', False),
        (b"[" * 17 + b"]" * 17, False),
        (b"[" * 16 + b"]" * 16, True),
    ],
)
def test_json_simple_table(text: bytes, simple: bool) -> None:
    assert _module().json_simple(text) is simple
    if simple:
        assert _loads_ok(text)


# --- the lane with other message types, the switch, bad calls ----------------------------


class _FakeMessage:
    """Message-like without confluent_kafka: the lane calls the methods generically."""

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
    """A subclass has a __dict__: the lane must not call its methods straight."""


def _stream() -> tuple[RunState, bytes, list[Message]]:
    from test_fastlane import _prepared_runs

    runs = _prepared_runs()
    state, key, _ = runs[0]
    values = []
    for before, run_key, value in runs:  # the run's counted records in a row
        if run_key == key and before.last_seq == state.last_seq + len(values):
            values.append(value)
    offsets = range(state.source_offset + 1, state.source_offset + 1 + len(values))
    msgs = [
        Message(topic="ev", partition=0, offset=offset, key=key, value=value)
        for offset, value in zip(offsets, values, strict=True)
    ]
    return state, key, msgs


@pytest.mark.parametrize("wrap", [_FakeMessage, None, "subclass", "mixed"])
def test_any_message_type_folds_alike(wrap: Any) -> None:
    state, key, msgs = _stream()
    assert len(msgs) > 3
    if wrap is _FakeMessage:
        msgs = [_FakeMessage(msg) for msg in msgs]  # type: ignore[misc]
    elif wrap == "subclass":
        msgs = [
            _MessageSubclass(topic="ev", partition=0, offset=m.offset(), key=key, value=m.value())
            for m in msgs
        ]
    elif wrap == "mixed":
        msgs = [_FakeMessage(m) if i % 2 else m for i, m in enumerate(msgs)]  # type: ignore[misc]
    results = []
    for compiled in (True, False):
        lane = batch_lane(compiled=compiled)
        assert lane is not None
        copy = state.copy()
        dirty: dict[int, set[bytes]] = {}
        offsets: dict[int, int] = {}
        got = lane(msgs, 0, {0: {key: copy}}, dirty, offsets, set())
        results.append((got, copy, dirty, offsets))
    assert results[0] == results[1]
    assert results[0][0] == (len(msgs), len(msgs))


def test_pure_python_is_chosen_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNFOLD_PURE_PYTHON", "1")
    assert not compiled_lane_available()
    lane = batch_lane()
    assert lane is not None and not hasattr(lane, "__self__")  # the Python closure
    with pytest.raises(ImportError, match="RUNFOLD_PURE_PYTHON"):
        batch_lane(compiled=True)
    monkeypatch.setenv("RUNFOLD_PURE_PYTHON", "0")
    assert compiled_lane_available()


def test_no_lane_for_a_schema_it_was_not_written_for(monkeypatch: pytest.MonkeyPatch) -> None:
    from schemas import fastpath

    monkeypatch.setitem(fastpath.PINNED, "Event", b"\x00" * 8)
    assert batch_lane() is None


def test_start_at_or_past_the_end_folds_nothing() -> None:
    state, key, msgs = _stream()
    for compiled in (True, False):
        lane = batch_lane(compiled=compiled)
        assert lane is not None
        assert lane(msgs, len(msgs), {0: {key: state}}, {}, {}, set()) == (len(msgs), 0)
        assert lane(msgs, len(msgs) + 3, {0: {key: state}}, {}, {}, set()) == (len(msgs), 0)
        assert lane([], 0, {}, {}, {}, set()) == (0, 0)


def test_bad_arguments_are_type_errors() -> None:
    lane = batch_lane(compiled=True)
    assert lane is not None
    with pytest.raises(TypeError):
        lane((), 0, {}, {}, {}, set())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        lane([], 0, [], {}, {}, set())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        lane([], -1, {}, {}, {}, set())
    with pytest.raises(TypeError):
        lane([], 0, {}, {}, {})  # type: ignore[call-arg]


def test_a_changed_run_state_class_turns_the_c_lane_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # The C lane reads RunState's slots by offset; if the class's attribute is replaced,
    # it must stop taking records rather than write where the attribute no longer is.
    state, key, msgs = _stream()
    lane = batch_lane(compiled=True)
    assert lane is not None
    monkeypatch.setattr(RunState, "last_seq", property(lambda self: 0), raising=True)
    assert lane(msgs, 0, {0: {key: state}}, {}, {}, set()) == (0, 0)
