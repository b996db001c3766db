"""Dead-letter records: a poison input kept byte for byte, with headers saying why.

A record that fails deterministically (it cannot be decoded, its key does not
match the run it carries) goes to ``agent-run-events-dlq`` once, immediately:
retrying bytes that are wrong cannot make them right. Transient failures (the
broker is unavailable) are retried by the service and never reach this module.

The DLQ record keeps the original key and value unchanged, so it can be replayed
into ``agent-run-events`` after a fix, and adds these headers (UTF-8 text):

==========================  ===============================================
``runfold.reason``          short stable code (``wrong-magic``, ``key-mismatch`` ...)
``runfold.error``           the error message, for a person
``runfold.source.topic``    topic the record was read from
``runfold.source.partition``  its partition (decimal)
``runfold.source.offset``   its offset (decimal)
``runfold.exception``       class name of the exception that rejected it
==========================  ===============================================

A record too large for the DLQ topic (its ``max.message.bytes``, see
:func:`fit_dead_letter`) is not a reason to stop: its value is cut to what fits and a
header ``runfold.truncated`` gives the original value size (decimal); a key too large
to fit is dropped, with ``runfold.key.truncated``. Such a record cannot be replayed as
is, but says what was rejected, where, and why.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DLQ_HEADERS",
    "DeadLetter",
    "RECORD_OVERHEAD",
    "TRUNCATED_HEADER",
    "dead_letter_headers",
    "fit_dead_letter",
    "parse_dead_letter_headers",
    "record_size",
]

TRUNCATED_HEADER = "runfold.truncated"
"""Header of a DLQ record whose value was cut to fit: the original value size in bytes."""
KEY_TRUNCATED_HEADER = "runfold.key.truncated"
"""Header of a DLQ record whose key was dropped to fit: the original key size in bytes."""

RECORD_OVERHEAD = 1024
"""Bytes allowed for a record's framing in a batch (batch header 61, varints, librdkafka's
own estimate), on top of key, value and headers, when checking it against a limit."""

DLQ_HEADERS = (
    "runfold.reason",
    "runfold.error",
    "runfold.source.topic",
    "runfold.source.partition",
    "runfold.source.offset",
    "runfold.exception",
)
"""The header names every DLQ record carries, in the order they are written."""

# Header values are bounded so that a huge exception message cannot make the
# DLQ record exceed the broker's message size limit.
_MAX_ERROR_CHARS = 2000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why and where one input record was rejected."""

    reason: str
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    exception: str


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The Kafka headers of a DLQ record, as ``(name, UTF-8 bytes)`` pairs."""
    values = (
        letter.reason,
        letter.error[:_MAX_ERROR_CHARS],
        letter.source_topic,
        str(letter.source_partition),
        str(letter.source_offset),
        letter.exception,
    )
    return [(name, value.encode("utf-8")) for name, value in zip(DLQ_HEADERS, values, strict=True)]


def record_size(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
) -> int:
    """An upper bound of a record's size against ``max.message.bytes`` (uncompressed)."""
    size = RECORD_OVERHEAD + len(key or b"") + len(value or b"")
    for name, header in headers or ():
        size += len(name) + len(header) + 10
    return size


def fit_dead_letter(
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]],
    limit: int,
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` of a DLQ record no larger than ``limit`` bytes.

    Unchanged when it fits. Otherwise the value keeps its first bytes, as many as fit, and
    :data:`TRUNCATED_HEADER` gives its original size; a key that alone does not fit is
    dropped (:data:`KEY_TRUNCATED_HEADER`). The reason headers always come first.
    """
    if record_size(key, value, headers) <= limit:
        return key, value, headers
    size = len(value or b"")
    headers = [*headers, (TRUNCATED_HEADER, str(size).encode())]
    if record_size(key, None, headers) > limit:
        headers.append((KEY_TRUNCATED_HEADER, str(len(key or b"")).encode()))
        key = None
    room = limit - record_size(key, None, headers)
    kept = value[: max(0, room)] if value is not None else None
    return key, kept, headers


def parse_dead_letter_headers(
    headers: list[tuple[str, bytes | None]] | None,
) -> DeadLetter:
    """Read the headers written by :func:`dead_letter_headers` back (for tools and tests).

    Raises ``KeyError`` naming the first missing header.
    """
    found = {name: (value or b"").decode("utf-8", "replace") for name, value in headers or []}
    for name in DLQ_HEADERS:
        if name not in found:
            raise KeyError(f"DLQ record has no {name!r} header")
    return DeadLetter(
        reason=found["runfold.reason"],
        error=found["runfold.error"],
        source_topic=found["runfold.source.topic"],
        source_partition=int(found["runfold.source.partition"]),
        source_offset=int(found["runfold.source.offset"]),
        exception=found["runfold.exception"],
    )
