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
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DLQ_HEADERS",
    "DeadLetter",
    "dead_letter_headers",
    "parse_dead_letter_headers",
]

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
