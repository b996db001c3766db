"""The ``runfold.RunMarker`` record's layout (v1), as plain values: :class:`MarkerRecord`.

A finished run's marker (``consumers.lifecycle``) is written to the state changelog in
place of its RunState after the grace period, and read back by every restore: a million
finished runs are a million of these, so they are read here (~2 µs each), not through
fastavro (~30 µs). ``consumers.state_bytes`` adds the single-object header.
"""

from __future__ import annotations

from typing import NamedTuple

from schemas.avro_binary.primitives import (
    UUID_LENGTH,
    Invalid,
    Truncated,
    read_long,
    u64,
    write_long,
)

__all__ = ["MarkerRecord", "decode_marker", "encode_marker"]

_STATUS_COUNT = 4  # runfold.RunStatus symbols: RUNNING, COMPLETED, FAILED, CANCELLED


class MarkerRecord(NamedTuple):
    """A ``runfold.RunMarker`` record's values, in the schema's order."""

    run_id: str
    """Lower-case hyphenated, 36 characters."""
    last_seq: int
    status: int
    """Index of the ``RunStatus`` symbol."""
    finished_at: int
    last_digest: int
    """The 8 bytes of ``last_digest`` as a little-endian unsigned integer."""


def encode_marker(m: MarkerRecord) -> bytes:
    """The record's Avro body; :class:`~schemas.avro_binary.primitives.Overflow` for a
    ``last_seq`` of 2**63 or more (an Avro long cannot hold it)."""
    run_id = m.run_id.encode()
    if len(run_id) != 36:
        raise Invalid("run_id", f"{m.run_id!r} is not a hyphenated UUID")
    return b"".join(
        (
            UUID_LENGTH,
            run_id,
            write_long(m.last_seq),
            write_long(m.status),
            write_long(m.finished_at),
            m.last_digest.to_bytes(8, "little"),
        )
    )


def decode_marker(buf: bytes, pos: int) -> tuple[MarkerRecord, int]:
    """The record at ``buf[pos:]`` and the position after it; raises on damaged bytes."""
    if buf[pos : pos + 1] != UUID_LENGTH:
        raise Invalid("run_id", "not a 36-character string")
    end = pos + 37
    run_id = buf[pos + 1 : end].decode("ascii")
    last_seq, end = read_long(buf, end)
    status, end = read_long(buf, end)
    finished_at, end = read_long(buf, end)
    if not 0 <= status < _STATUS_COUNT:
        raise Invalid("status", f"enum index {status} is not a RunStatus")
    digest = buf[end : end + 8]
    if len(digest) != 8:
        raise Truncated("last_digest: 8 bytes run past the end")
    record = MarkerRecord(
        run_id, u64(last_seq, "last_seq"), status, finished_at, int.from_bytes(digest, "little")
    )
    return record, end + 8
