"""The service's batch lane: the common record read from its bytes, folded by the one rule.

Most records of ``agent-run-events`` are the next event of a run the service already
tracks, of a kind that only counts (``node_entered``, ``tool_called``, ... see
:data:`~consumers.next_event.COUNTED_KINDS`). For those the fold needs nothing but the
seq, the timestamp, the kind's tag and the content digest, so building the pydantic
:class:`~schemas.Event` only to drop it again was most of the service's cost per record
(``python -m bench.lane_bench`` measures it).

:func:`decoder` gives the C extension :mod:`consumers.service._lane` (built by
``pip install -e .`` when a compiler is at hand; ``RUNFOLD_PURE_PYTHON=1`` turns it
off), whose ``read(msgs)`` returns, per consumed message, the plain values
``(partition, key, offset, seq, timestamp, tag, digest)`` of a record that the codec
certainly reads the same way, or None. It knows no rule: the service gives the values
to :func:`consumers.next_event.fold_next`, and takes the general path (decode with
:mod:`schemas.codec`, :func:`~consumers.sequence.apply_event`) for every None and
every record ``fold_next`` declines. Without the extension there is no lane and every
record takes the general path, which is the lane's test oracle
(``tests/consumers/service/test_lane.py``).

Confluent-framed records (``00`` + a registry's schema id) carry the same body; the id of
the pinned Event version is only known once the registry was asked, so the decoder learns
it from the general path (:meth:`~consumers.service.edge.FoldEdge.learn_framing`): the
first such record is decoded the general way, the next ones take the lane.

The digest the lane hands over is :func:`~consumers.digest.digest_bytes` of the
record's body, which is :func:`~consumers.digest.content_digest` of its event (the
digest of the canonical body) only for a canonical body: minimal varints, string arrays
in one block, the payload :func:`~schemas.serde.canonical_dumps` of its value. The
decoder proves that (in C, else by :func:`canonical_payload`) or refuses the record, so
the general path, the oracle, digests every other one.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Protocol

from consumers.next_event import COUNTED_KINDS
from schemas import serde
from schemas.avro_binary import KIND_LAYOUTS, PINNED, U32_FIELDS
from schemas.framing import SINGLE_OBJECT_HEADER_SIZE, SINGLE_OBJECT_MAGIC
from schemas.model import EVENT_KINDS

__all__ = [
    "FIELD_READS",
    "LaneDecoder",
    "canonical_payload",
    "compiled_lane_available",
    "decoder",
    "field_reads",
]

LaneValues = tuple[int, bytes, int, int, int, str, int]
"""``(partition, key, offset, seq, timestamp, tag, digest)`` of one common record."""


class LaneDecoder(Protocol):
    """What :func:`decoder` returns (:class:`consumers.service._lane.Decoder`)."""

    def read(self, msgs: list[Any]) -> list[LaneValues | None]:
        """Per message: its values when it is certainly the common record, else None."""

    def read_value(self, key: bytes, value: bytes) -> tuple[int, int, str, int] | None:
        """``(seq, timestamp, tag, digest)`` of one record's bytes, or None."""

    def learn(self, header: bytes) -> bool:
        """Take records with this Confluent header (``00`` + schema id) too: the caller
        vouches that the id names the pinned Event version. False when full (8 ids)."""


_UUID_TEXT = 36
# Payload texts already parsed (``{}`` is half of all events): a bounded cache of a
# pure check, it changes no result, only the cost of parsing the same text again.
_PAYLOAD_CACHE_SIZE = 8192

FIELD_READS = ("string", "u32", "u64", "optional string", "string array")
"""How a field of a kind's record is read; the C decoder's field codes are the indexes."""


def field_reads(cls: type[Any]) -> list[str]:
    """How each field of an EventKind record is read, from its layout in
    :data:`schemas.avro_binary.KIND_LAYOUTS` (the one the codec's readers are generated
    from): UTF-8 strings, u32 fields in range, u64 fields not negative, ``null`` or a
    string, string arrays."""
    reads = {
        "string": "string",
        "optional string": "optional string",
        "array<string>": "string array",
    }
    return [
        ("u32" if name in U32_FIELDS else "u64") if avro_type == "long" else reads[avro_type]
        for name, avro_type in KIND_LAYOUTS[cls]
    ]


def _branch_table() -> list[tuple[str, bytes] | None]:
    """Per union branch of ``kind``: (tag, field read codes) for a counted kind, or None."""
    return [
        (tag, bytes(FIELD_READS.index(read) for read in field_reads(cls)))
        if tag in COUNTED_KINDS
        else None
        for tag, cls in EVENT_KINDS.items()
    ]


def _compiled_module() -> Any | None:
    """:mod:`consumers.service._lane` if it was built and is not turned off, else None."""
    if os.environ.get("RUNFOLD_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module("consumers.service._lane")
    except ImportError:
        return None


def compiled_lane_available() -> bool:
    """Whether the C decoder was built (and is not turned off by ``RUNFOLD_PURE_PYTHON``)."""
    return _compiled_module() is not None


def decoder(*, cache_size: int = _PAYLOAD_CACHE_SIZE) -> LaneDecoder | None:
    """The batch lane's decoder, or None: not built, turned off, or the codec's current
    Event version is not the one :mod:`schemas.avro_binary` was written for (then only
    the general path may read records)."""
    from schemas.codec import EventCodec

    module = _compiled_module()
    fingerprint = PINNED["Event"]
    if module is None or EventCodec().current.fingerprint != fingerprint:
        return None
    lane: LaneDecoder = module.Decoder(
        # then the 36-byte run_id: zigzag(36) is 0x48
        prefix=SINGLE_OBJECT_MAGIC + fingerprint + bytes([2 * _UUID_TEXT]),
        header=SINGLE_OBJECT_HEADER_SIZE,
        branches=_branch_table(),
        loads=canonical_payload,
        cache_size=cache_size,
    )
    return lane


def canonical_payload(text: str) -> Any:
    """:func:`schemas.serde.loads` of a payload text that is canonical JSON; raises otherwise.

    The C decoder's check of a payload it cannot prove canonical by itself (floats,
    escapes, unsorted keys): the lane hands over the digest of the record's bytes,
    which is :func:`~consumers.digest.content_digest` of its event only when the
    payload text is :func:`~schemas.serde.canonical_dumps` of its value. Any other text
    (another writer's key order, whitespace) takes the general path, which digests
    the decoded event.
    """
    value = serde.loads(text)
    if serde.canonical_dumps(value) != text:
        raise ValueError("payload is JSON but not its canonical text")
    return value
