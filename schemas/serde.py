"""JSON text exactly as Rust's ``serde_json`` (with ``preserve_order``) writes and reads it.

:func:`dumps` writes a JSON value the way ``serde_json::to_string`` writes a
``serde_json::Value``: compact, object keys in insertion order, non-ASCII raw,
``"``/``\\``/``\\n``/``\\t``/``\\r``/``\\b``/``\\f`` escaped and the other
control characters as ``\\u00xx``; floats as serde_json 1.0.147+ writes them
(its ``zmij`` writer: shortest round-trip digits, fixed notation for decimal
exponents -5..=15, else ``1e+16``, ``1.5e-7``); NaN and infinities as ``null``;
integers outside ``i64``/``u64`` as the ``f64`` serde would hold. (serde_json up
to 1.0.146 used ryu, which wrote ``1e16``; the interop vectors pin 1.0.154.)

:func:`loads` reads JSON text with serde_json's number rules: integers that fit
``u64`` (or ``i64`` when negative) stay integers, others and ``-0`` become
floats; ``NaN``/``Infinity``, out-of-range floats, lone surrogates and values nested
deeper than serde_json's recursion limit (:data:`MAX_DEPTH` levels) are rejected.

Both go through the ``json`` module's public API (``JSONEncoder.encode``,
``JSONDecoder.raw_decode``, both C-accelerated); :func:`dumps` falls back to a
careful pure-Python writer only when ``json``'s output holds something serde writes
differently (found by cheap substring tests), so the common case costs what
``json.dumps``/``json.loads`` cost.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "canonical_dumps",
    "dumps",
    "format_float",
    "loads",
    "loads_noting_duplicates",
    "quote",
]

_I64_MIN = -(2**63)
_U64_MAX = 2**64 - 1


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not a JSON value")


# Compact, non-ASCII raw, no circular-reference bookkeeping (JSON values are trees);
# NaN and Infinity are written (as Python spells them) and caught by _dumps_suspect.
_encoder = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, allow_nan=True, separators=(",", ":"),
    default=_not_json,
)
_json_dumps = _encoder.encode

# The same, keys sorted: the canonical text of a value (canonical_dumps). Through the
# public JSONEncoder only: json.encoder's private c_make_encoder would save building its
# scanner per call, but the project uses no CPython private API.
_sorted_encoder = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, allow_nan=True, separators=(",", ":"),
    default=_not_json, sort_keys=True,
)
_json_dumps_sorted = _sorted_encoder.encode

quote: Callable[[str], str] = _encoder.encode
"""A JSON string literal with serde_json's escapes (``quote("a\\n") == '"a\\\\n"'``):
``"``, ``\\`` and the control characters, non-ASCII raw, as ``json`` escapes them."""


# What the C encoder writes differently from serde_json: small exponent floats
# (Python writes ``1e-05``, ``1e-07``), NaN/Infinity, and integers of 19+ digits that
# may lie outside i64/u64. A hit may be a false alarm inside a string; the slow
# path is right either way. Substring tests are C-fast where a regex scan is not:
# digits are mapped to "0" so a run of 19 digits is a run of 19 zeros.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19


def _dumps_suspect(text: str) -> bool:
    return (
        "e-0" in text
        or "NaN" in text
        or "Infinity" in text
        or _NINETEEN_DIGITS in text.encode().translate(_DIGITS_TO_ZERO)
    )


def format_float(value: float) -> str:
    """``value`` as serde_json writes an ``f64`` (``zmij``: shortest round-trip digits).

    NaN and the infinities have no JSON form; serde_json's ``Value`` holds them
    as ``null``, so that is what is written.
    """
    text = repr(value)
    if "e" not in text:
        if text[-1] in "nf":  # 'nan', 'inf', '-inf'
            return "null"
        # repr uses fixed notation exactly where zmij does, except 1e-5 ..< 1e-4 (below).
        return text
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text)
    if exponent == -5:
        # zmij writes 0.0000ddd for exponents down to -5; repr switched at -4.
        sign = ""
        if mantissa[0] == "-":
            sign, mantissa = "-", mantissa[1:]
        return f"{sign}0.0000{mantissa.replace('.', '')}"
    return f"{mantissa}e{exponent:+d}"  # e+16, e-7: signed, not zero-padded


def _int_text(value: int) -> str:
    if _I64_MIN <= value <= _U64_MAX:
        return str(value)
    # serde_json's Value has no integer this wide; it holds the nearest f64.
    try:
        return format_float(float(value))
    except OverflowError as exc:
        raise ValueError(
            f"integer {value} is beyond the range of an f64; serde_json cannot hold it"
        ) from exc


def _dumps_slow(value: Any) -> str:
    parts: list[str] = []
    _write(value, parts.append)
    return "".join(parts)


def _write(value: Any, out: Callable[[str], None]) -> None:
    if isinstance(value, str):
        out(quote(value))
    elif value is None:
        out("null")
    elif value is True:
        out("true")
    elif value is False:
        out("false")
    elif isinstance(value, int):
        out(_int_text(value))
    elif isinstance(value, float):
        out(format_float(value))
    elif isinstance(value, dict):
        out("{")
        first = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
            if not first:
                out(",")
            first = False
            out(quote(key))
            out(":")
            _write(item, out)
        out("}")
    elif isinstance(value, list | tuple):
        out("[")
        for index, item in enumerate(value):
            if index:
                out(",")
            _write(item, out)
        out("]")
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value")


def dumps(value: Any) -> str:
    """Compact JSON text of ``value``, byte-identical to ``serde_json::to_string``."""
    try:
        text: str = _json_dumps(value)
    except (TypeError, ValueError):
        return _dumps_slow(value)  # raises the precise error
    if _dumps_suspect(text):
        return _dumps_slow(value)
    return text


def canonical_dumps(value: Any) -> str:
    """:func:`dumps` with every object's keys in code point order: one text per JSON value.

    The canonical form the fold digests a payload by (``consumers.digest.content_digest``):
    two texts that differ only in key order or whitespace read to values with the same
    canonical text, so a redelivered event re-encoded by another writer is still known.
    """
    try:
        text: str = _json_dumps_sorted(value)
    except (TypeError, ValueError):
        return _dumps_slow(_sort_keys(value))  # raises the precise error
    if _dumps_suspect(text):
        return _dumps_slow(_sort_keys(value))
    return text


def _sort_keys(value: Any) -> Any:
    if isinstance(value, dict):
        try:
            keys = sorted(value)
        except TypeError:
            return value  # a key that is not a string: _write says so
        return {key: _sort_keys(value[key]) for key in keys}
    if isinstance(value, list | tuple):
        return [_sort_keys(item) for item in value]
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (serde_json rejects NaN and Infinity)")


def _serde_int(text: str) -> int | float:
    value = int(text)
    if value == 0 and text[0] == "-":
        return -0.0  # serde_json reads "-0" as the float -0.0
    if _I64_MIN <= value <= _U64_MAX:
        return value
    return _serde_float(text)


def _serde_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} is out of range for an f64")
    return value


# serde_json's number rules cost little as hooks: the C scanner calls them only
# for numbers, and a scan of the text for the rare cases would cost more.
_decoder = json.JSONDecoder(
    parse_constant=_reject_constant, parse_int=_serde_int, parse_float=_serde_float
)
_loads = _decoder.decode
# raw_decode is the C scanner without decode's two whitespace regex matches: compact
# text (what serde and runfold write) starts and ends with a value.
_raw_decode = _decoder.raw_decode
_JSON_WHITESPACE = " \t\n\r"


def _check_surrogates(value: Any) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"string {value!r} holds a lone surrogate escape; serde_json rejects it"
            ) from exc
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_surrogates(key)
            _check_surrogates(item)
    elif isinstance(value, list):
        for item in value:
            _check_surrogates(item)


MAX_DEPTH = 127
"""The deepest nesting of arrays and objects serde_json reads: its recursion limit of 128
counts the container that exceeds it (``"[" * 127`` + ``"]" * 127`` reads, 128 does not)."""

# A string literal (escapes included) or one bracket: what the depth scan walks.
_DEPTH_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _check_depth(text: str) -> None:
    """ValueError if ``text`` nests deeper than :data:`MAX_DEPTH`, saying where.

    Checked before parsing: Python's scanner recurses per level (100,000 levels raise
    RecursionError), and serde_json refuses 128. Text with fewer than 128 opening
    brackets cannot nest that deep: callers count them first, the only cost for most texts.
    """
    depth = 0
    for token in _DEPTH_TOKENS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(
                    f"JSON nested deeper than {MAX_DEPTH} levels at character {token.start()}: "
                    "serde_json's recursion limit (128) refuses it"
                )
        elif char in "]}":
            depth -= 1


def loads(text: str | bytes) -> Any:
    """Parse JSON text as ``serde_json::from_str::<Value>`` would (ValueError if it would fail)."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    if text.count("[") + text.count("{") > MAX_DEPTH:
        _check_depth(text)
    if text and text[0] not in _JSON_WHITESPACE:
        value, end = _raw_decode(text)  # raises JSONDecodeError saying where
        if end != len(text):
            value = _loads(text)  # trailing whitespace is fine, anything else is an error
    else:
        value = _loads(text)
    if "\\u" in text:  # only an escape can make a lone surrogate
        _check_surrogates(value)
    return value


_duplicates = threading.local()


def _pairs_to_dict(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # serde_json's map keeps a repeated key's first position and last value; so does dict.
    value = dict(pairs)
    if len(value) != len(pairs):
        _duplicates.seen.append((value, [key for key, _ in pairs]))
    return value


_noting_decoder = json.JSONDecoder(
    parse_constant=_reject_constant,
    parse_int=_serde_int,
    parse_float=_serde_float,
    object_pairs_hook=_pairs_to_dict,
)


def loads_noting_duplicates(text: str | bytes) -> tuple[Any, list[tuple[dict[str, Any], str]]]:
    """:func:`loads`, and the objects that repeated a key, with the first repeated key.

    A ``serde_json::Value`` map takes a repeated key (last value wins), but a
    derived struct refuses it; the caller decides which objects were structs.
    """
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")
    if text.count("[") + text.count("{") > MAX_DEPTH:
        _check_depth(text)
    _duplicates.seen = []
    try:
        value = _noting_decoder.decode(text)
        seen = _duplicates.seen
    finally:
        del _duplicates.seen
    if "\\u" in text:
        _check_surrogates(value)
    repeated = []
    for obj, keys in seen:
        first = next(key for index, key in enumerate(keys) if key in keys[:index])
        repeated.append((obj, first))
    return value, repeated
