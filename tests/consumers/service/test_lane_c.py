"""The C decoder's own pieces equal the Python they stand in for.

``consumers.service._lane`` checks UTF-8, computes CRC-32 and recognises certainly-valid
payload JSON by itself; each is compared here with the Python it stands in for
(``bytes.decode``, ``zlib.crc32``, ``serde.loads``) on generated inputs.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.service.lane import compiled_lane_available
from schemas import serde

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(not compiled_lane_available(), reason="consumers.service._lane not built"),
]


def _module() -> Any:
    import consumers.service._lane

    return consumers.service._lane


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


@given(_JSON_VALUES, st.sampled_from(["serde", "canonical", "python", "python-ascii"]))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_json_taken_as_valid_is_valid_for_serde_and_canonical(value: Any, writer: str) -> None:
    if writer == "serde":
        text = serde.dumps(value)
    elif writer == "canonical":
        text = serde.canonical_dumps(value)
    else:
        text = json.dumps(value, ensure_ascii=writer == "python-ascii")
    data = text.encode("utf-8", "surrogatepass")
    if _module().json_simple(data):
        assert _loads_ok(data), data
        # The lane digests the bytes as they are: they must be the canonical text.
        assert serde.canonical_dumps(serde.loads(data.decode())) == text, data


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
        assert serde.canonical_dumps(serde.loads(damaged.decode())).encode() == damaged


@pytest.mark.parametrize(
    ("text", "simple"),
    [
        (b"{}", True),
        (b'{"input_tokens":2241}', True),
        (b'{"args":{"query":"plan-1"},"n":[1,-2,325,null,true,false]}', True),
        (b'{"args":{"query":"plan-1"},"n":[1,-2,3.25,null,true,false]}', False),  # a float
        (b'"tab\\tquote\\"slash/"', True),
        (b'"slash\\/"', False),  # the writer writes / raw
        (b"-0", False),  # a float to serde, written -0.0
        (b'{"a":1,"ab":2,"b":3}', True),
        (b'{"b":1,"a":2}', False),  # keys out of order
        (b'{"a":1,"a":1}', False),  # a key twice
        (b'{"a\\n":1}', False),  # an escape in a key
        (b'{"z":1,"\xc3\xa9":2}', True),  # code point order: z < e-acute
        (b'{"\xc3\xa9":1,"z":2}', False),
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
