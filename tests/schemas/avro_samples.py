"""Sample records for any parsed Avro schema, and a FULL-compatibility check through fastavro.

``sample_records(schema)`` gives records that together take every union branch
and every enum symbol at least once, so writing them with one schema version and
reading them with another exercises every part of fastavro's schema resolution.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import fastavro

_PRIMITIVE_SAMPLES: dict[str, list[Any]] = {
    "null": [None],
    "boolean": [True, False],
    "int": [0, -1, 2**31 - 1],
    "long": [0, -(2**63), 2**63 - 1, 1_714_564_800_123_456_789],
    "float": [0.0, 1.5],
    "double": [0.0, -2.5, 1e300],
    "bytes": [b"", b"\x00\xff"],
    "string": ["", "é漢😀", '{"a":[1,2]}'],
}


def _width(schema: Any, named: dict[str, Any], seen: frozenset[str]) -> int:
    """How many samples it takes to visit every branch/symbol under ``schema``."""
    if isinstance(schema, str):
        if schema in _PRIMITIVE_SAMPLES:
            return len(_PRIMITIVE_SAMPLES[schema])
        if schema in seen:
            return 1
        return _width(named[schema], named, seen | {schema})
    if isinstance(schema, list):
        return max([len(schema)] + [_width(branch, named, seen) for branch in schema])
    kind = schema["type"]
    if kind in ("record", "error"):
        fields = [_width(f["type"], named, seen | {schema["name"]}) for f in schema["fields"]]
        return max([1, *fields])
    if kind == "enum":
        return len(schema["symbols"])
    if kind == "array":
        return _width(schema["items"], named, seen)
    if kind == "map":
        return _width(schema["values"], named, seen)
    if kind == "fixed":
        return 1
    return _width(kind, named, seen)


def _sample(schema: Any, i: int, named: dict[str, Any], depth: int) -> Any:
    if isinstance(schema, str):
        if schema in _PRIMITIVE_SAMPLES:
            options = _PRIMITIVE_SAMPLES[schema]
            return options[i % len(options)]
        return _sample(named[schema], i, named, depth)
    if isinstance(schema, list):
        # Deep in a recursive schema, prefer "null" so the sample stays finite.
        index = 0 if depth > 3 and "null" in schema else i % len(schema)
        branch = schema[index]
        value = _sample(branch, i, named, depth + 1)
        if isinstance(branch, dict) and branch.get("type") in ("record", "error"):
            return (branch["name"], value)
        if isinstance(branch, str) and branch in named:
            return (branch, value)
        return value
    kind = schema["type"]
    logical = schema.get("logicalType")
    if logical == "uuid":
        return str(uuid.UUID(int=(i * 0x9E3779B97F4A7C15) % 2**128))
    if kind in ("record", "error"):
        return {f["name"]: _sample(f["type"], i, named, depth + 1) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][i % len(schema["symbols"])]
    if kind == "array":
        return [_sample(schema["items"], i + k, named, depth + 1) for k in range(i % 3)]
    if kind == "map":
        return {f"k{k}": _sample(schema["values"], i + k, named, depth + 1) for k in range(i % 3)}
    if kind == "fixed":
        return bytes(schema["size"])
    return _sample(kind, i, named, depth)


def sample_records(schema: dict[str, Any]) -> list[Any]:
    """Records of the parsed ``schema`` covering every union branch and enum symbol."""
    named = schema.get("__named_schemas", {})
    count = _width(schema, named, frozenset())
    return [_sample(schema, i, named, 0) for i in range(max(count, 2))]


def read_across(writer: dict[str, Any], reader: dict[str, Any], record: Any) -> Any:
    """``record`` written with ``writer`` and read back resolved to ``reader``."""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, writer, record)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, writer, reader)


def assert_full_compatible(
    old: dict[str, Any], new: dict[str, Any], added_symbols: frozenset[str] = frozenset()
) -> None:
    """Data written with either schema reads with the other (backward and forward).

    ``added_symbols``: enum symbols the new version added. An old reader cannot read a
    record that uses one (it has no default for its enum); every other record must read.
    """
    for record in sample_records(old):
        read_across(old, new, record)
    for record in sample_records(new):
        if _uses(record, added_symbols):
            try:
                read_across(new, old, record)
            except Exception:  # noqa: BLE001 - fastavro's resolution error, as expected
                continue
            raise AssertionError(f"an old reader read a new symbol of {record!r}")
        read_across(new, old, record)


def _uses(value: Any, symbols: frozenset[str]) -> bool:
    if isinstance(value, str):
        return value in symbols
    if isinstance(value, dict):
        return any(_uses(v, symbols) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_uses(v, symbols) for v in value)
    return False
