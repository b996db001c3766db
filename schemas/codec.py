"""Avro codecs for the wire: ``encode_event(event) -> bytes``, ``decode_event(data) -> Event``, ...

Codecs are objects built once (schemas parsed, registry client made lazily) and
called per message::

    codec = EventCodec()                         # single-object framing, no registry
    data = codec.encode(event)                   # b"\\xc3\\x01" + fingerprint + body
    assert codec.decode(data) == event

    codec = EventCodec(registry="http://registry:8081")
    data = codec.encode(event, framing="confluent")   # b"\\x00" + schema id + body

The decoder picks the framing from the first byte, finds the writer schema
(by fingerprint among the kept versions, or by id in the registry) and resolves
it to the current version. Anything undecodable raises
:class:`~schemas.errors.DecodeError` with a ``reason`` code and the library's
error as ``__cause__``.

The current Event, Run and Violation versions go through runfold's own Avro layer,
:mod:`schemas.avro_binary`; other writer versions and other records (any schema
in ``schemas/avro``, see :class:`RecordCodec`) go through fastavro.

Limit: Rust ``u64`` values travel in an Avro ``long`` (signed), so a value of
2**63 or more cannot be encoded; :class:`~schemas.errors.EncodeError` names the field.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import fastavro

from schemas import avro_binary
from schemas.catalog import SchemaCatalog, SchemaVersion, default_catalog
from schemas.errors import ConfigError, DecodeError, EncodeError
from schemas.framing import (
    CONFLUENT_HEADER_SIZE,
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_HEADER_SIZE,
    SINGLE_OBJECT_MAGIC,
    Framing,
    RegistrySchemas,
    split_single_object,
)
from schemas.model import Event, Run, Violation
from schemas.records import model_from_record, model_to_record, overflowing_fields
from schemas.strict_reader import read_strict

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = [
    "EventCodec",
    "Framing",
    "RecordCodec",
    "RunCodec",
    "ViolationCodec",
    "configure_registry",
    "current_event_header",
    "decode_event",
    "decode_record",
    "decode_run",
    "decode_violation",
    "encode_event",
    "encode_record",
    "encode_run",
    "encode_violation",
    "event_encoder",
    "keyed_event_encoder",
]

M = TypeVar("M", Event, Run, Violation)

_TRUNCATION_ERRORS = (EOFError, IndexError, avro_binary.Truncated)
_MAGIC_HELP = "expected C3 01 (Avro single-object) or 00 (Confluent wire format)"


def _decode_error_for(exc: Exception, what: str) -> DecodeError:
    """The DecodeError for an exception raised while reading a body."""
    if isinstance(exc, DecodeError):
        return exc
    if isinstance(exc, _TRUNCATION_ERRORS):
        detail = str(exc) or type(exc).__name__
        return DecodeError(f"truncated {what} body: {detail}", reason="truncated")
    if isinstance(exc, avro_binary.Invalid):
        reason = "invalid-json" if "not JSON" in str(exc) else "invalid-value"
        return DecodeError(f"invalid value in {what}: {exc}", reason=reason)
    if isinstance(exc, avro_binary.Overlong):
        return DecodeError(f"invalid {what} body: {exc}", reason="invalid-body")
    if isinstance(exc, UnicodeDecodeError):
        return DecodeError(
            f"invalid {what} body: a string is not UTF-8 (byte {exc.start} of it is "
            f"{exc.object[exc.start]:#04x}: {exc.reason})",
            reason="invalid-body",
        )
    return DecodeError(f"invalid {what} body: {exc or type(exc).__name__}", reason="invalid-body")


class RecordCodec:
    """Single-object (or Confluent) framing for any record schema kept in ``schemas/avro``.

    Records are the dicts fastavro reads and writes. For a schema that refers to
    another (``RunState`` holding a ``runfold.Run``) nothing extra is needed: the
    catalog resolves named types across files.
    """

    def __init__(
        self,
        name: str,
        *,
        catalog: SchemaCatalog | None = None,
        registry: SchemaRegistryClient | str | None = None,
        subject: str | None = None,
    ) -> None:
        self.catalog = catalog or default_catalog()
        self.name = name
        self.current: SchemaVersion = self.catalog.current(name)
        self.subject = subject or self.current.fullname
        self._registry = RegistrySchemas(registry, self.catalog) if registry is not None else None
        self._single_object_header = SINGLE_OBJECT_MAGIC + self.current.fingerprint
        # A reader per writer version: resolving to the current version is fastavro's job.
        self._resolved: dict[bytes, Any] = {}
        self._lock = threading.Lock()

    def header(self, framing: Framing) -> bytes:
        """The bytes that start a message of the current version in ``framing``."""
        if framing == "single-object":
            return self._single_object_header
        if framing == "confluent":
            if self._registry is None:
                raise EncodeError(
                    f"Confluent framing needs a schema registry; give {type(self).__name__} "
                    "registry=<client or URL> (or use framing='single-object')"
                )
            return self._registry.header(self.subject, self.current)
        raise EncodeError(f"unknown framing {framing!r}; use 'single-object' or 'confluent'")

    def encode(self, record: dict[str, Any], *, framing: Framing = "single-object") -> bytes:
        """``record`` in the current schema version, framed."""
        out = io.BytesIO()
        out.write(self.header(framing))
        try:
            fastavro.schemaless_writer(out, self.current.parsed, record)
        except Exception as exc:
            raise EncodeError(f"cannot encode {self.name} record: {exc}") from exc
        return out.getvalue()

    def writer_of(self, data: bytes) -> tuple[Any, SchemaVersion | None, int]:
        """(parsed writer schema, its kept version or None, body offset) from the framing."""
        first = data[:1]
        if first == b"\xc3":
            if data[1:2] != b"\x01":
                raise DecodeError(
                    f"wrong magic bytes {data[:2].hex(' ')}: {_MAGIC_HELP}", reason="wrong-magic"
                )
            version = split_single_object(data, self.catalog)
            if version.name != self.name:
                raise DecodeError(
                    f"the message holds a {version.name}.v{version.version}; "
                    f"this codec reads {self.name}",
                    reason="unknown-fingerprint",
                )
            return version.parsed, version, SINGLE_OBJECT_HEADER_SIZE
        if first == CONFLUENT_MAGIC:
            if self._registry is None:
                raise DecodeError(
                    "Confluent-framed message (first byte 00) but no schema registry is "
                    f"configured for the {self.name} codec",
                    reason="registry-unavailable",
                )
            writer = self._registry.writer(data)
            if writer.kept is not None and writer.kept.name != self.name:
                raise DecodeError(
                    f"schema id {writer.schema_id} is a {writer.kept.name}; "
                    f"this codec reads {self.name}",
                    reason="unknown-schema-id",
                )
            return writer.parsed, writer.kept, CONFLUENT_HEADER_SIZE
        if not data:
            raise DecodeError("empty message: no bytes to decode", reason="empty")
        raise DecodeError(f"wrong magic byte {data[0]:02x}: {_MAGIC_HELP}", reason="wrong-magic")

    def read_body(self, data: bytes, writer: Any, start: int) -> Any:
        """fastavro's reading of the body at ``data[start:]``, resolved to the current version."""
        reader = None if writer is self.current.parsed else self.current.parsed
        body = io.BytesIO(data)
        body.seek(start)
        try:
            record = fastavro.schemaless_reader(body, writer, reader, return_record_name=True)
        except Exception as exc:
            raise _decode_error_for(exc, self.name) from exc
        if body.tell() != len(data):
            raise _trailing(self.name, len(data) - body.tell())
        return record

    def decode(self, data: bytes) -> dict[str, Any]:
        """The record in ``data``, in the current schema version's shape.

        Unions of records come back as ``(full name, record)`` tuples, the form
        fastavro's writer takes too.
        """
        writer, _, start = self.writer_of(data)
        record: dict[str, Any] = self.read_body(data, writer, start)
        return record


_FAST_PATHS: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes, int], tuple[Any, int]]]] = {
    "Event": (avro_binary.encode_event, avro_binary.decode_event),
    "Run": (avro_binary.encode_run, avro_binary.decode_run),
    "Violation": (avro_binary.encode_violation, avro_binary.decode_violation),
}


class _ModelCodec(RecordCodec, Generic[M]):
    """A RecordCodec between bytes and one model class, with the hand-written fast path."""

    schema_name: ClassVar[str]
    model: ClassVar[type[Any]]
    default_subject: ClassVar[str]

    def __init__(
        self,
        *,
        catalog: SchemaCatalog | None = None,
        registry: SchemaRegistryClient | str | None = None,
        subject: str | None = None,
    ) -> None:
        super().__init__(
            self.schema_name,
            catalog=catalog,
            registry=registry,
            subject=subject or self.default_subject,
        )
        # The fast path is exact for one schema version only; any other current
        # version (a new .avsc not yet taught to avro_binary) goes through fastavro.
        self._fast = self.current.fingerprint == avro_binary.PINNED[self.schema_name]
        fast = _FAST_PATHS[self.schema_name]
        self._fast_encode: Callable[[Any], bytes] = fast[0]
        self._fast_decode: Callable[[bytes, int], tuple[Any, int]] = fast[1]

    def encode(self, value: M, *, framing: Framing = "single-object") -> bytes:  # type: ignore[override]
        """``value`` as Avro in the current schema version, framed (single-object by default)."""
        header = self._single_object_header if framing == "single-object" else self.header(framing)
        try:
            if self._fast:
                return header + self._fast_encode(value)
            return super().encode(model_to_record(value, self.current.parsed), framing=framing)
        except avro_binary.Overflow as exc:
            fields = ", ".join(overflowing_fields(value))
            raise EncodeError(
                f"cannot encode {self.schema_name}: {fields} is 2**63 or more, beyond an Avro "
                "long (runfold carries Rust u64 values in a signed long)"
            ) from exc
        except EncodeError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise EncodeError(f"cannot encode {value!r} as a {self.schema_name}: {exc}") from exc

    def decode(self, data: bytes) -> M:  # type: ignore[override]
        """The model value in ``data``; :class:`DecodeError` if it cannot be read."""
        if type(data) is not bytes:
            data = bytes(data)  # memoryview, bytearray: the fast path slices and decodes bytes
        if self._fast and data[:10] == self._single_object_header:
            return self._fast_body(data, SINGLE_OBJECT_HEADER_SIZE)
        writer, kept, start = self.writer_of(data)
        if self._fast and kept is self.current:
            return self._fast_body(data, start)
        # Another writer version (or a current version avro_binary was not written for):
        # fastavro reads it, held to avro_binary's rules (schemas.strict_reader).
        try:
            record, end = read_strict(data, start, writer, self.current.parsed)
            result: M = model_from_record(self.model, record)
        except Exception as exc:
            raise _decode_error_for(exc, self.schema_name) from exc
        if end != len(data):
            raise _trailing(self.schema_name, len(data) - end)
        return result

    def _fast_body(self, data: bytes, start: int) -> M:
        """The value of the current version's body at ``data[start:]``, by avro_binary."""
        try:
            value, end = self._fast_decode(data, start)
        except Exception as exc:
            raise _decode_error_for(exc, self.schema_name) from exc
        if end != len(data):
            raise _trailing(self.schema_name, len(data) - end)
        result: M = value
        return result


def _trailing(what: str, left: int) -> DecodeError:
    """The DecodeError of bytes after the end of a record (a record is the whole message)."""
    return DecodeError(
        f"invalid {what} body: {left} bytes left after the record (a message holds one "
        "record; were two written into one value?)",
        reason="invalid-body",
    )


class EventCodec(_ModelCodec[Event]):
    """Codec of :class:`~schemas.model.Event` (topic ``agent-run-events``)."""

    schema_name = "Event"
    model = Event
    default_subject = "agent-run-events-value"


class RunCodec(_ModelCodec[Run]):
    """Codec of :class:`~schemas.model.Run` (topic ``agent-runs``)."""

    schema_name = "Run"
    model = Run
    default_subject = "agent-runs-value"


class ViolationCodec(_ModelCodec[Violation]):
    """Codec of :class:`~schemas.model.Violation` (topic ``agent-run-violations``)."""

    schema_name = "Violation"
    model = Violation
    default_subject = "agent-run-violations-value"


# --- module-level functions over default codecs ------------------------------

_defaults: dict[str, Any] = {}
_registry: SchemaRegistryClient | str | None = None
_defaults_lock = threading.Lock()


def configure_registry(registry: SchemaRegistryClient | str | None) -> None:
    """Set the schema registry the module-level functions use for Confluent framing.

    ``None`` removes it. Codecs built from now on use it; nothing connects until
    a Confluent-framed message is encoded or decoded.
    """
    global _registry
    with _defaults_lock:
        _registry = registry
        _defaults.clear()


def _default(key: str, build: Callable[[], Any]) -> Any:
    codec = _defaults.get(key)
    if codec is None:
        with _defaults_lock:
            codec = _defaults.get(key)
            if codec is None:
                codec = _defaults[key] = build()
    return codec


def _event_codec() -> EventCodec:
    codec: EventCodec = _default("Event", lambda: EventCodec(registry=_registry))
    return codec


def _run_codec() -> RunCodec:
    codec: RunCodec = _default("Run", lambda: RunCodec(registry=_registry))
    return codec


def _violation_codec() -> ViolationCodec:
    codec: ViolationCodec = _default("Violation", lambda: ViolationCodec(registry=_registry))
    return codec


def encode_event(event: Event, *, framing: Framing = "single-object") -> bytes:
    """``event`` as an Avro message (single-object framing unless told ``"confluent"``)."""
    return _event_codec().encode(event, framing=framing)


def decode_event(data: bytes) -> Event:
    """The Event in an Avro message of either framing; :class:`DecodeError` says why not."""
    return _event_codec().decode(data)


def encode_run(run: Run, *, framing: Framing = "single-object") -> bytes:
    """``run`` as an Avro message (single-object framing unless told ``"confluent"``)."""
    return _run_codec().encode(run, framing=framing)


def decode_run(data: bytes) -> Run:
    """The Run in an Avro message of either framing; :class:`DecodeError` says why not."""
    return _run_codec().decode(data)


def encode_violation(violation: Violation, *, framing: Framing = "single-object") -> bytes:
    """``violation`` as an Avro message (single-object framing unless told ``"confluent"``)."""
    return _violation_codec().encode(violation, framing=framing)


def decode_violation(data: bytes) -> Violation:
    """The Violation in an Avro message of either framing; :class:`DecodeError` says why not."""
    return _violation_codec().decode(data)


def encode_record(
    name: str, record: dict[str, Any], *, framing: Framing = "single-object"
) -> bytes:
    """A record of the kept schema ``name`` (e.g. ``"RunState"``) as an Avro message."""
    codec: RecordCodec = _default(f"record:{name}", lambda: RecordCodec(name, registry=_registry))
    return codec.encode(record, framing=framing)


def decode_record(name: str, data: bytes) -> dict[str, Any]:
    """The record of schema ``name`` in an Avro message, resolved to the current version."""
    codec: RecordCodec = _default(f"record:{name}", lambda: RecordCodec(name, registry=_registry))
    return codec.decode(data)


def current_event_header(data: bytes) -> bytes | None:
    """The framing header of an Event record whose writer is the current schema version,
    the one :mod:`schemas.avro_binary` reads (single-object or Confluent, resolved through
    the configured registry), or None: another version, or bytes that do not read.

    What the folding service's C decoder may learn to take (a Confluent schema id is only
    known once the registry has been asked)."""
    codec = _event_codec()
    try:
        _, kept, start = codec.writer_of(data)
    except DecodeError:
        return None
    return data[:start] if codec._fast and kept is codec.current else None


def event_encoder(
    framing: str, registry: SchemaRegistryClient | str | None = None
) -> Callable[[Event], bytes]:
    """``event -> bytes`` in ``framing`` (``"single-object"`` or ``"confluent"``), built once.

    Single-object: a codec of the caller's own (schemas parsed once, no registry);
    Confluent: a codec on ``registry`` (a client or URL), or the module-level codec with
    the registry :func:`configure_registry` set.
    """
    if framing == "single-object":
        encode: Callable[[Event], bytes] = EventCodec().encode
        return encode
    if framing != "confluent":
        raise ConfigError(f"framing {framing!r} is unknown; use 'single-object' or 'confluent'")
    codec = EventCodec(registry=registry) if registry is not None else _event_codec()

    def encode_confluent(event: Event) -> bytes:
        return codec.encode(event, framing="confluent")

    return encode_confluent


def keyed_event_encoder(framing: str) -> Callable[[Event, bytes], bytes] | None:
    """``(event, key) -> bytes`` for a producer that holds ``key = str(event.run_id).encode()``.

    Byte for byte ``EventCodec().encode(event)`` without formatting the run_id twice;
    None where that does not apply (Confluent framing, or a current Event schema
    :mod:`schemas.avro_binary` was not written for).
    """
    codec = EventCodec()
    if framing != "single-object" or not codec._fast:
        return None
    header = codec.header("single-object")
    body = avro_binary.encode_event

    def encode(event: Event, key: bytes) -> bytes:
        return header + body(event, key)

    return encode
