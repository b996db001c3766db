"""The content digest of an event, by which a duplicate is told from a conflict.

:func:`content_digest` is THE digest of an event's content; :func:`digest_bytes` is the
same function of bytes, for a decoder that holds a record's canonical content bytes
(the service's C lane, :mod:`consumers.service.lane`). The digests are kept in each
run's digest ring and persisted with its state, so both are stable across processes.
The sequence rules that compare them are in :mod:`consumers.sequence`.
"""

from __future__ import annotations

import zlib

from schemas import Event
from schemas.avro_binary import KIND_WRITERS as _KIND_WRITERS
from schemas.avro_binary import write_stamp as _write_stamp
from schemas.avro_binary import write_string as _write_string
from schemas.serde import canonical_dumps as _canonical_dumps

__all__ = ["content_digest", "digest_bytes"]

_crc32 = zlib.crc32


def content_digest(event: Event) -> int:
    """THE 64-bit digest of an event's content, by which a duplicate is told from a conflict.

    :func:`digest_bytes` of the event's content in its canonical Avro form (``Event.v1``,
    the layout of :mod:`schemas.avro_binary`): the body after run_id and seq, that is the
    timestamp, the kind (branch and fields) and the payload as canonical JSON
    (:func:`schemas.serde.canonical_dumps`: keys in code point order, compact). Two
    events compared are at one seq of one run, so this is all that can tell them apart;
    the same event re-encoded with another key order or whitespace in its payload, or
    framed single-object vs Confluent, has the same digest. The library fold and the
    service compute this one function (the service's C lane only for records whose
    bytes it proves canonical: then the digest of those bytes is this one), so a state
    folded by one is continued by the other. Stable across processes (the digests are
    persisted). Not cryptographic, and it needs not be: a collision only turns a
    conflict into a duplicate, and neither is applied. Never 0.
    """
    kind = event.kind
    payload = event.payload
    try:
        kind_bytes = _kind_bytes(kind)
        content = b"".join(
            (
                _write_stamp(event.timestamp),
                kind_bytes,
                _EMPTY_OBJECT
                if type(payload) is dict and not payload
                else _write_string(_canonical_dumps(payload)),
            )
        )
    except (ValueError, TypeError, KeyError):
        # Values no Avro record carries (a hand-built Event with a u64 >= 2**63, a
        # non-JSON payload): no record can be compared with it, any stable digest will do.
        content = repr((event.timestamp.real, kind.__dict__, event.payload)).encode(
            "utf-8", "surrogatepass"
        )
    return ((len(content) & 0xFFFFFFFF) << 32) | _crc32(content) or 1


def _kind_bytes(kind: object) -> bytes:
    """The kind's Avro bytes (branch and fields), memoised by its type and field values."""
    key = (type(kind), *kind.__dict__.values())
    try:
        known = _KIND_BYTES.get(key)
    except TypeError:  # a field value that cannot be hashed (a hand-built list): not kept
        return _KIND_WRITERS[type(kind)](kind)
    if known is None:
        known = _KIND_WRITERS[type(kind)](kind)
        if len(_KIND_BYTES) >= _KIND_BYTES_SIZE:
            _KIND_BYTES.clear()
        _KIND_BYTES[key] = known
    return known


# Kinds repeat (the same tool, the same node): their bytes are memoised by value, and
# half of all payloads are ``{}``. A pure function's cache, bounded; it changes no
# result, only the cost.
_KIND_BYTES: dict[tuple[object, ...], bytes] = {}
_KIND_BYTES_SIZE = 4096
_EMPTY_OBJECT = _write_string("{}")


def digest_bytes(data: bytes) -> int:
    """The fold's digest of some bytes: CRC-32 in the low half, the length above it.

    :func:`content_digest` is this of the canonical content bytes; a decoder holding a
    record whose bytes it has proved canonical (the service's C lane) passes this of the
    bytes after run_id and seq, the same value. Any other digest would make the
    persisted digests disagree, and redelivered duplicates be told as conflicts. Never 0.
    """
    return ((len(data) & 0xFFFFFFFF) << 32) | _crc32(data) or 1
