"""runfold's exceptions: one root, a small tree under it.

Catch :class:`RunfoldError` to catch anything runfold raises on purpose; catch a
leaf to handle one failure. Library errors (pydantic, fastavro, confluent-kafka)
are wrapped, never leaked, and kept as ``__cause__``.

Our exception hierarchy::

    RunfoldError
    ├── SchemaError                 a value does not fit the domain model
    │   └── ValidationError         bad model input (JSON or Python values), names the field
    ├── CodecError                  the wire format could not be written or read
    │   ├── EncodeError             a value cannot be put on the wire (u64 >= 2**63 in a long)
    │   └── DecodeError             bytes are not a valid runfold message; has ``reason`` and
    │                               optional ``topic``/``partition``/``offset``
    ├── ConfigError                 settings are missing, unknown or inconsistent
    └── KafkaSetupError             a broker could not be started, reached or prepared
"""

from __future__ import annotations

__all__ = [
    "DECODE_REASONS",
    "CodecError",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "KafkaSetupError",
    "RunfoldError",
    "SchemaError",
    "ValidationError",
]


class RunfoldError(Exception):
    """Base class of every error runfold raises on purpose."""


class SchemaError(RunfoldError):
    """A value does not fit the domain model or an Avro schema is unusable."""


class ValidationError(SchemaError, ValueError):
    """Bad input for a model: the message names the field and what was wrong."""


class CodecError(RunfoldError):
    """The wire format could not be written or read."""


class EncodeError(CodecError, ValueError):
    """A value cannot be encoded (for example a u64 of 2**63 or more in an Avro ``long``)."""


DECODE_REASONS = frozenset(
    {
        "empty",
        "truncated",
        "wrong-magic",
        "unknown-fingerprint",
        "unknown-schema-id",
        "invalid-body",
        "invalid-value",
        "invalid-json",
        "registry-unavailable",
    }
)
"""The short codes :attr:`DecodeError.reason` takes; stable, fit for DLQ headers and metrics."""


class DecodeError(CodecError, ValueError):
    """Bytes that are not a valid runfold message.

    ``reason`` is a short stable code (one of :data:`DECODE_REASONS`, e.g.
    ``"wrong-magic"``); ``topic``, ``partition`` and ``offset`` say where the
    bytes came from when the caller knows (see :meth:`at`).
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str = "invalid-body",
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset

    def at(self, topic: str | None, partition: int | None, offset: int | None) -> DecodeError:
        """Record where the bytes came from; returns ``self``, for ``raise err.at(...)``."""
        self.topic = topic
        self.partition = partition
        self.offset = offset
        return self

    def __str__(self) -> str:
        if self.topic is None:
            return self.message
        where = f"{self.topic}[{self.partition}]@{self.offset}"
        return f"{self.message} (at {where})"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only attributes do not survive the default pickling of exceptions.
        return (
            _rebuild_decode_error,
            (self.message, self.reason, self.topic, self.partition, self.offset),
        )


def _rebuild_decode_error(
    message: str, reason: str, topic: str | None, partition: int | None, offset: int | None
) -> DecodeError:
    return DecodeError(message, reason=reason, topic=topic, partition=partition, offset=offset)


class ConfigError(RunfoldError, ValueError):
    """Settings are missing, unknown or inconsistent; the message names the setting."""


class KafkaSetupError(RunfoldError):
    """A Kafka broker could not be started, reached or prepared (topics, registry)."""
