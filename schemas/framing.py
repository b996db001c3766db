"""Message framing: Avro single-object encoding and the Confluent wire format.

- ``C3 01`` + 8-byte CRC-64-AVRO fingerprint (little-endian) + body: Avro
  single-object encoding; the reader finds the writer schema among the kept
  versions by fingerprint. The default: needs no registry.
- ``00`` + 4-byte big-endian schema id + body: Confluent wire format, the
  writer schema fetched from a Schema Registry by id.

The first byte decides. :class:`RegistrySchemas` keeps the registry lookups
(one per schema id / subject, cached) away from the per-message path.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any, Literal

from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from schemas.catalog import SchemaCatalog, SchemaVersion
from schemas.errors import DecodeError, EncodeError

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = [
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT_MAGIC",
    "Framing",
    "RegistrySchemas",
    "WriterSchema",
    "registry_client",
    "split_single_object",
]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
"""The two bytes that start an Avro single-object encoded message."""
CONFLUENT_MAGIC = b"\x00"
"""The byte that starts a Confluent wire-format message."""
SINGLE_OBJECT_HEADER_SIZE = 10
CONFLUENT_HEADER_SIZE = 5

Framing = Literal["single-object", "confluent"]
"""How a message is framed: ``"single-object"`` (default, no registry) or ``"confluent"``."""


def split_single_object(data: bytes, catalog: SchemaCatalog) -> SchemaVersion:
    """The kept writer schema named by a single-object header (``data`` starts ``C3 01``)."""
    if len(data) < SINGLE_OBJECT_HEADER_SIZE:
        raise DecodeError(
            f"truncated: a single-object header needs {SINGLE_OBJECT_HEADER_SIZE} bytes, "
            f"the message has {len(data)}",
            reason="truncated",
        )
    fp = data[2:SINGLE_OBJECT_HEADER_SIZE]
    version = catalog.by_fingerprint(fp)
    if version is None:
        known = ", ".join(f"{v.name}.v{v.version}={v.fingerprint_hex}" for v in catalog)
        raise DecodeError(
            f"unknown schema fingerprint {fp.hex()}: no kept schema version has it "
            f"(kept: {known}); was it written with a schema runfold does not know?",
            reason="unknown-fingerprint",
        )
    return version


class WriterSchema:
    """A writer schema fetched from a registry: parsed, and matched to a kept version if any."""

    __slots__ = ("kept", "parsed", "schema_id")

    def __init__(self, schema_id: int, parsed: Any, kept: SchemaVersion | None) -> None:
        self.schema_id = schema_id
        self.parsed = parsed
        self.kept = kept


def registry_client(registry: SchemaRegistryClient | str) -> SchemaRegistryClient:
    """A registry client from a client or a URL (``mock://...`` gives confluent's in-memory one)."""
    if isinstance(registry, str):
        from confluent_kafka.schema_registry import SchemaRegistryClient

        return SchemaRegistryClient.new_client({"url": registry})
    return registry


class RegistrySchemas:
    """Schema ids for writing and writer schemas for reading, from one registry, cached.

    Nothing touches the network until the first Confluent-framed message.
    """

    def __init__(self, registry: SchemaRegistryClient | str, catalog: SchemaCatalog) -> None:
        self._registry_arg = registry
        self._client: SchemaRegistryClient | None = None
        self._catalog = catalog
        self._headers: dict[tuple[str, bytes], bytes] = {}
        self._writers: dict[int, WriterSchema] = {}
        self._lock = threading.Lock()

    @property
    def client(self) -> SchemaRegistryClient:
        """The registry client, built on first use."""
        if self._client is None:
            self._client = registry_client(self._registry_arg)
        return self._client

    def header(self, subject: str, version: SchemaVersion) -> bytes:
        """``00`` + the registry id of ``version`` under ``subject`` (registered on first use)."""
        key = (subject, version.fingerprint)
        header = self._headers.get(key)
        if header is None:
            from confluent_kafka.schema_registry import Schema

            with self._lock:
                try:
                    schema_id = self.client.register_schema(
                        subject, Schema(version.schema_text, "AVRO")
                    )
                except Exception as exc:  # the client raises several kinds
                    raise EncodeError(
                        f"could not register {version.name}.v{version.version} under subject "
                        f"{subject!r} in the schema registry: {exc}"
                    ) from exc
                header = CONFLUENT_MAGIC + int(schema_id).to_bytes(4, "big")
                self._headers[key] = header
        return header

    def writer(self, data: bytes) -> WriterSchema:
        """The writer schema of a Confluent-framed message (``data`` starts ``00``)."""
        if len(data) < CONFLUENT_HEADER_SIZE:
            raise DecodeError(
                f"truncated: a Confluent header needs {CONFLUENT_HEADER_SIZE} bytes, "
                f"the message has {len(data)}",
                reason="truncated",
            )
        schema_id = int.from_bytes(data[1:CONFLUENT_HEADER_SIZE], "big")
        writer = self._writers.get(schema_id)
        if writer is None:
            writer = self._fetch(schema_id)
            self._writers[schema_id] = writer
        return writer

    def _fetch(self, schema_id: int) -> WriterSchema:
        try:
            schema = self.client.get_schema(schema_id)
        except Exception as exc:
            status = getattr(exc, "http_status_code", None)
            if status == 404:
                raise DecodeError(
                    f"unknown schema id {schema_id}: the schema registry does not have it",
                    reason="unknown-schema-id",
                ) from exc
            raise DecodeError(
                f"could not fetch schema id {schema_id} from the schema registry: {exc}",
                reason="registry-unavailable",
            ) from exc
        try:
            parsed = parse_schema(
                json.loads(schema.schema_str or ""), named_schemas=dict(self._catalog.named_schemas)
            )
            canonical = to_parsing_canonical_form(parsed)
        except Exception as exc:
            raise DecodeError(
                f"schema id {schema_id} from the registry is not a usable Avro schema: {exc}",
                reason="unknown-schema-id",
            ) from exc
        kept = self._catalog.by_fingerprint(bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")))
        return WriterSchema(schema_id, parsed, kept)
