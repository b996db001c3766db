"""Avro binary primitives: zigzag varint longs, strings, ``["null", T]`` unions, arrays.

The writers return ``bytes`` (joined by the record layouts in
:mod:`schemas.avro_binary.layouts`); the readers take ``(buf, pos)`` and return
``(value, next_pos)``. Also here: the checks of Rust integer widths and of the
text fields (UUID, serde JSON) a reader applies, and :func:`trusted`, which makes a
model instance from values these checks already guarantee.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from schemas import serde

__all__ = [
    "GROUP7",
    "LOW14",
    "NINE_BYTE_STAMPS",
    "SEQ_MAX",
    "SMALL_LONGS",
    "UUID_LENGTH",
    "Invalid",
    "Overflow",
    "Overlong",
    "Truncated",
    "json_from",
    "read_array",
    "read_branch",
    "read_bytes",
    "read_long",
    "read_string",
    "skip_string",
    "read_string_array",
    "seq_from",
    "trusted",
    "u32",
    "u64",
    "utf8_from",
    "uuid_from",
    "write_long",
    "write_optional_string",
    "write_stamp",
    "write_string",
    "write_string_array",
]

_LONG_MAX = 2**63 - 1
_U32_MAX = 2**32 - 1
SEQ_MAX = _LONG_MAX
"""The largest seq an Event may carry: a Rust u64 travelling in an Avro ``long``."""


class Overflow(ValueError):
    """An integer does not fit an Avro ``long``."""


class Truncated(ValueError):
    """The body ended before the record did."""


class Overlong(ValueError):
    """A varint runs past 64 bits: a tenth byte above 1, or more than ten bytes."""


class Invalid(ValueError):
    """The body decodes, but to a value the model cannot hold (``field`` says which)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


# --- writing primitives ------------------------------------------------------------

SMALL_LONGS = [bytes([(n << 1) if n >= 0 else ((-n << 1) - 1)]) for n in range(-64, 64)]
"""``SMALL_LONGS[n + 64]`` is the one-byte varint of ``n`` in ``-64..63``."""


def _compile_varints() -> list[Callable[[int], bytes]]:
    """One unrolled varint writer per byte length (1..10), indexed by the zigzag bit length.

    A loop appending to a bytearray costs about twice a single ``bytes((...))``
    of precomputed shifts, and timestamps (9 bytes) are on every event.
    """
    writers: list[Callable[[int], bytes]] = []
    by_length: dict[int, Callable[[int], bytes]] = {}
    for length in range(1, 11):
        groups = [f"z >> {7 * i} & 127 | 128" for i in range(length - 1)]
        groups.append(f"z >> {7 * (length - 1)}")
        env: dict[str, Any] = {}
        exec(f"def write(z):\n    return bytes(({', '.join(groups)},))\n", env)  # noqa: S102
        by_length[length] = env["write"]
    for bits in range(65):
        writers.append(by_length[max(1, (bits + 6) // 7)])
    return writers


_VARINTS = _compile_varints()


def write_long(n: int) -> bytes:
    """The Avro ``long`` ``n`` (zigzag varint); :class:`Overflow` outside a signed 64 bits."""
    if -64 <= n < 64:
        return SMALL_LONGS[n + 64]
    if n > _LONG_MAX or n < -_LONG_MAX - 1:
        raise Overflow(n)
    z = (n << 1) ^ (n >> 63)
    return _VARINTS[z.bit_length()](z)


def write_string(text: str) -> bytes:
    """The Avro ``string`` ``text``: its UTF-8 length, then the bytes."""
    data = text.encode()
    return write_long(len(data)) + data


def write_optional_string(text: str | None) -> bytes:
    """A ``["null", "string"]`` union."""
    return b"\x00" if text is None else b"\x02" + write_string(text)


def write_string_array(items: tuple[str, ...]) -> bytes:
    """An ``array<string>`` in one block."""
    if not items:
        return b"\x00"
    return write_long(len(items)) + b"".join(map(write_string, items)) + b"\x00"


UUID_LENGTH = b"\x48"
"""The varint length of a run_id string: zigzag(36), str(UUID) being 36 ASCII characters."""

LOW14 = [bytes((n & 127 | 128, n >> 7 | 128)) for n in range(1 << 14)]
"""The first two bytes of a varint longer than 2 bytes whose low 14 bits are ``n``."""
GROUP7 = [bytes((n | 128,)) for n in range(128)]
"""A middle byte of a varint: 7 bits and the continuation bit."""
NINE_BYTE_STAMPS = range(1 << 55, 1 << 62)
"""Timestamps (ns; 1971..2116) whose varint is 9 bytes, the ones :func:`write_stamp` splices.

Test with comparisons, not ``in``: for an int subclass such as Timestamp, range
membership walks the range item by item."""
_NINE_LOW, _NINE_HIGH = NINE_BYTE_STAMPS.start, NINE_BYTE_STAMPS.stop
_last_top: tuple[int, bytes] = (-1, b"")


def write_stamp(n: int) -> bytes:
    """:func:`write_long` for timestamps: the same bytes, cheaper for successive clock readings.

    A 9-byte varint (1971..2116 in ns) is 2 bytes from its low 14 bits, one of the
    next 7 and 6 of ``z >> 21``, which changes about once a millisecond and is kept
    from the call before (one tuple, so threads never mix two calls' halves).
    """
    global _last_top
    if not _NINE_LOW <= n < _NINE_HIGH:
        return write_long(n)
    z = n << 1
    top = z >> 21
    last, top_bytes = _last_top
    if top != last:
        top_bytes = _VARINTS[63](z)[3:]
        _last_top = (top, top_bytes)
    return b"".join((LOW14[z & 16383], GROUP7[z >> 14 & 127], top_bytes))


# --- reading primitives ------------------------------------------------------------


def _compile_read_long() -> Callable[[bytes, int], tuple[int, int]]:
    """The reader of an Avro ``long``, unrolled over the ten bytes a varint may take.

    A loop with a shift counter costs a fifth more on 9-byte timestamps. The tenth byte
    holds the 64th bit only: above 1 (or with its continuation bit) the varint runs past
    64 bits, which no Avro ``long`` does (Java and Rust readers refuse it), so it is
    refused here too (:class:`Overlong`), never read into a wider Python int.
    """
    lines = [
        "def read_long(buf, pos):",
        "    byte = buf[pos]",
        "    if byte < 0x80:",
        "        return (byte >> 1) ^ -(byte & 1), pos + 1",
        "    n = byte & 0x7F",
    ]
    for i in range(1, 9):
        lines.append(f"    byte = buf[pos + {i}]")
        lines.append(f"    n |= (byte & 0x7F) << {7 * i}")
        lines.append("    if byte < 0x80:")
        lines.append(f"        return (n >> 1) ^ -(n & 1), pos + {i + 1}")
    lines.append("    byte = buf[pos + 9]")
    lines.append("    if byte > 1:")
    lines.append("        raise Overlong(overlong(buf, pos))")
    lines.append("    n |= byte << 63")
    lines.append("    return (n >> 1) ^ -(n & 1), pos + 10")
    env: dict[str, Any] = {"Overlong": Overlong, "overlong": _overlong_message}
    exec(compile("\n".join(lines) + "\n", "<avro read_long>", "exec"), env)  # noqa: S102
    read: Callable[[bytes, int], tuple[int, int]] = env["read_long"]
    read.__doc__ = (
        "The Avro ``long`` at ``buf[pos:]`` and the position after it; :class:`Overlong` "
        "for a varint past 64 bits."
    )
    return read


def _overlong_message(buf: bytes, pos: int) -> str:
    """What :class:`Overlong` says: where the varint starts and how it ends."""
    tenth = buf[pos + 9]
    how = "more than 10 bytes" if tenth >= 0x80 else f"a 10th byte of {tenth:#04x} (at most 0x01)"
    return (
        f"the varint at byte {pos} runs past 64 bits ({how}); an Avro long is a signed "
        "64-bit integer"
    )


read_long = _compile_read_long()


def _string_span(buf: bytes, pos: int) -> tuple[int, int]:
    """Where the bytes of the Avro ``string`` at ``buf[pos:]`` start and end."""
    byte = buf[pos]
    if byte < 0x80 and not byte & 1:  # a length under 64, in one byte: most of them
        size, pos = byte >> 1, pos + 1
    else:
        size, pos = read_long(buf, pos)
    end = pos + size
    if size < 0:
        raise ValueError(f"negative string length {size} at byte {pos}")
    if end > len(buf):
        raise Truncated(f"a string of {size} bytes runs past the end")
    return pos, end


def read_string(buf: bytes, pos: int) -> tuple[str, int]:
    """The Avro ``string`` at ``buf[pos:]`` and the position after it."""
    start, end = _string_span(buf, pos)
    return utf8_from(buf[start:end], start), end


def skip_string(buf: bytes, pos: int) -> int:
    """The position after the Avro ``string`` at ``buf[pos:]``, its bytes not decoded."""
    return _string_span(buf, pos)[1]


def utf8_from(data: bytes, pos: int) -> str:
    """The text of a string's bytes starting at ``pos``; a ValueError saying where they are
    not UTF-8 (an Avro string is UTF-8, and serde's ``String`` holds nothing else)."""
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"the string at byte {pos} is not UTF-8 ({data[exc.start]:#04x} at byte "
            f"{pos + exc.start}: {exc.reason})"
        ) from None


def read_bytes(buf: bytes, pos: int, size: int, what: str) -> tuple[bytes, int]:
    """``size`` raw bytes (a ``fixed``, or ``bytes`` after its length) at ``buf[pos:]``."""
    end = pos + size
    if size < 0:
        raise ValueError(f"{what}: negative length {size}")
    if end > len(buf):
        raise Truncated(f"{what}: {size} bytes run past the end")
    return buf[pos:end], end


def read_branch(buf: bytes, pos: int, field: str) -> bool:
    """Whether the ``["null", T]`` union at ``pos`` holds a value (branch byte 0 or 2)."""
    byte = buf[pos]
    if byte == 0:
        return False
    if byte == 2:
        return True
    raise ValueError(f"{field}: union branch byte {byte:#04x} is neither null (0) nor value (2)")


def read_array(
    buf: bytes, pos: int, item: Callable[[bytes, int], tuple[Any, int]]
) -> tuple[list[Any], int]:
    """An Avro array of ``item``s: blocks of a count (negative: followed by a byte size)."""
    items: list[Any] = []
    while True:
        count, pos = read_long(buf, pos)
        if count == 0:
            return items, pos
        if count < 0:  # a block with its byte size, which we do not need
            count = -count
            _, pos = read_long(buf, pos)
        for _ in range(count):
            element, pos = item(buf, pos)
            items.append(element)


def read_string_array(buf: bytes, pos: int) -> tuple[tuple[str, ...], int]:
    """An ``array<string>``, as a tuple."""
    items, pos = read_array(buf, pos, read_string)
    return tuple(items), pos


_set = object.__setattr__


# The hyphenated form, the one Avro's uuid logical type and Rust's 36-character parse take.
# UUID(text) alone also takes other spellings ("urn:" + 32 digits, hyphens anywhere, "_"
# between digits, surrounding spaces), which no Rust reader would.
_HYPHENATED = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


@functools.lru_cache(maxsize=2_048)
def _cached_uuid(text: str) -> UUID:
    # A run's events share its run_id, so most lookups hit; a miss costs a match and UUID()
    # (~3.5 us). Only records off the service's lane get here (a run's first and last, in a
    # fleet), so 2,048 entries cost the fold nothing measurable; 16,384 held ~5 MB for good,
    # and the memory a full cache holds stays the service's after the stream goes quiet.
    if _HYPHENATED.fullmatch(text) is None:
        raise ValueError("not 8-4-4-4-12 hex digits")
    return UUID(text)


def uuid_from(text: str, field: str) -> UUID:
    """The UUID in ``text`` (8-4-4-4-12 hex digits), else :class:`Invalid` naming ``field``."""
    try:
        return _cached_uuid(text)
    except ValueError:
        shown = repr(text) if len(text) <= 80 else f"{text[:60]!r}... ({len(text)} characters)"
        raise Invalid(
            field, f"{shown} is not a UUID (expected 8-4-4-4-12 hex digits, as Rust's uuid writes)"
        ) from None


def json_from(text: str, field: str) -> Any:
    """The JSON value of ``text`` as serde_json reads it, else :class:`Invalid` naming ``field``."""
    try:
        return serde.loads(text)
    except ValueError as exc:
        raise Invalid(field, f"not JSON as serde_json reads it: {exc}") from exc


# pydantic keeps these in slots; their descriptors set them faster than setattr.
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_new = object.__new__


def trusted(cls: type[Any], fields: dict[str, Any]) -> Any:
    """A model instance from already-valid ``fields`` (declaration order), skipping validation.

    What ``model_construct`` does, at a third of its cost: the Avro types and
    the checks here already guarantee what validation would.
    """
    obj = _new(cls)
    _set(obj, "__dict__", fields)
    _set_fields_set(obj, set(fields))
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


def u64(value: int, field: str) -> int:
    """``value`` if a Rust u64 holds it, else :class:`Invalid` naming ``field``."""
    if value < 0:
        raise Invalid(field, f"{value} is negative; a Rust u64 cannot hold it")
    return value


def seq_from(value: int, field: str = "seq") -> int:
    """``value`` if it is an event's seq (1 ..= 2**63 - 1), else :class:`Invalid` naming
    ``field``: seqs start at 1 (DESIGN §1), and 2**63 or more cannot travel in a long."""
    if not 1 <= value <= SEQ_MAX:
        why = "seqs start at 1" if value < 1 else "an Avro long holds at most 2**63 - 1"
        raise Invalid(field, f"{value} is not a seq ({why})")
    return value


def u32(value: int, field: str) -> int:
    """``value`` if a Rust u32 holds it, else :class:`Invalid` naming ``field``."""
    if not 0 <= value <= _U32_MAX:
        raise Invalid(field, f"{value} is outside a Rust u32 (0..=4294967295)")
    return value
