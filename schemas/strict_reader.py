"""fastavro's reading of a body, held to the rules of :mod:`schemas.avro_binary`.

The general path of the model codecs (a writer version other than the one
:mod:`schemas.avro_binary` is pinned to, e.g. an older Event schema or one fetched from a
registry) reads with fastavro, which is lenient where runfold's own reader is not:

- its varint reader keeps the low 64 bits of a varint that runs past them (Cython) or
  reads it into a wider int (pure Python), where an Avro ``long`` is 64 bits: here the
  longs are read by :func:`schemas.avro_binary.read_long`, the one varint rule, which
  refuses them (:class:`~schemas.avro_binary.Overlong`);
- its ``uuid`` logical type hands the text to ``uuid.UUID``, which takes spellings no
  Rust reader does (``urn:`` prefixes, hyphens anywhere): here ``uuid`` strings stay text
  and :func:`schemas.avro_binary.uuid_from` judges them (in :mod:`schemas.records`).

It is fastavro's pure-Python reader with a decoder of runfold's, so it costs several
times the Cython reader: it serves the rare records of another writer version only.
"""

from __future__ import annotations

import io
from typing import Any

from fastavro._read_py import _default_named_schemas, read_data
from fastavro.io.binary_decoder import BinaryDecoder
from fastavro.schema import parse_schema

from schemas.avro_binary import read_long

__all__ = ["read_strict"]


class _StrictDecoder(BinaryDecoder):
    """fastavro's binary decoder whose longs are read by :func:`schemas.avro_binary.read_long`."""

    def __init__(self, data: bytes, start: int) -> None:
        self.data = data
        fo = io.BytesIO(data)
        fo.seek(start)
        super().__init__(fo)  # type: ignore[no-untyped-call]

    def read_long(self) -> int:
        pos = self.fo.tell()
        if pos >= len(self.data):
            raise EOFError(f"the body ends at byte {pos}, where a long was due")
        try:
            value, end = read_long(self.data, pos)
        except IndexError:
            raise EOFError(f"the varint at byte {pos} runs past the end") from None
        self.fo.seek(end)
        return value

    read_int = read_long


def _plain_uuids(schema: Any) -> Any:
    """``schema`` with the ``uuid`` logical type taken off its strings (they stay text)."""
    if isinstance(schema, list):
        return [_plain_uuids(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("logicalType") == "uuid":
        return {k: v for k, v in schema.items() if k != "logicalType"}
    return {k: _plain_uuids(v) for k, v in schema.items()}


_PLAIN: dict[int, tuple[Any, Any]] = {}


def _plain(schema: Any) -> Any:
    # Parsed schemas live as long as their catalog or registry cache; keep the object
    # with its copy so its id is never reused for another.
    entry = _PLAIN.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = _PLAIN[id(schema)] = (schema, _plain_uuids(schema))
    return entry[1]


def read_strict(data: bytes, start: int, writer: Any, reader: Any | None) -> tuple[Any, int]:
    """The record at ``data[start:]`` written with ``writer``, resolved to ``reader`` (None:
    the writer's), with union records as ``(full name, record)``; and where it ends."""
    named: dict[str, Any] = _default_named_schemas()
    writer_schema = parse_schema(_plain(writer), named["writer"])
    reader_schema = None
    if reader is not None and reader is not writer:
        reader_schema = parse_schema(_plain(reader), named["reader"])
    decoder = _StrictDecoder(data, start)
    options = {
        "return_record_name": True,
        "return_record_name_override": False,
        "handle_unicode_errors": "strict",
        "return_named_type": False,
        "return_named_type_override": False,
    }
    record = read_data(  # type: ignore[no-untyped-call]
        decoder, writer_schema, named, reader_schema, options
    )
    return record, decoder.fo.tell()
