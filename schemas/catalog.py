"""The kept Avro schemas: every published version of every record, by name and by fingerprint.

Schemas live in ``schemas/avro/`` as ``<Name>.v<N>.avsc`` (namespace ``runfold``);
the highest ``N`` of a name is its *current* version, the one writers use and
readers resolve to. Old versions are never deleted: a reader must still find a
writer's schema by the fingerprint in a single-object header.

A file may refer to a named type another file defines (``"type": "runfold.Run"``
in ``RunState.v1.avsc``): all current versions are parsed into one set of named
types, so such references resolve in any order. The fingerprint and the
self-contained schema text given to registries inline a referenced definition
at its first use, as the Avro specification's Parsing Canonical Form requires.

A kept (not current) version must keep its fingerprint when a type it refers to gets a
new version: ``references.json`` in the directory pins, per kept file, the version of
each referenced name it was written with (``{"RunState.v1": {"Violation": 1}}``);
unpinned references resolve to the current versions.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastavro.schema import (
    UnknownType,
    fingerprint,
    parse_schema,
    to_parsing_canonical_form,
)

from schemas.errors import SchemaError

__all__ = [
    "AVRO_DIR",
    "SchemaCatalog",
    "SchemaVersion",
    "default_catalog",
]

AVRO_DIR = Path(__file__).resolve().parent / "avro"
"""Where the kept ``.avsc`` files live."""

_FILE_NAME = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc\Z")
_NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})


@dataclass(frozen=True)
class SchemaVersion:
    """One kept version of one schema, parsed once."""

    name: str
    """The file's schema name, e.g. ``"Event"``."""
    version: int
    """The ``N`` of ``<Name>.vN.avsc``."""
    path: Path
    fullname: str
    """The Avro full name, e.g. ``"runfold.Event"``."""
    parsed: dict[str, Any] = field(repr=False)
    """fastavro's parsed schema (named references resolved), for its readers and writers."""
    canonical_form: str = field(repr=False)
    """Avro Parsing Canonical Form, references inlined."""
    fingerprint: bytes
    """CRC-64-AVRO of the canonical form, 8 bytes little-endian (single-object header order)."""
    schema_text: str = field(repr=False)
    """Self-contained JSON schema text (references inlined, docs kept), for schema registries."""

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint as hex, in header byte order."""
        return self.fingerprint.hex()


def _strip_private(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_private(v) for k, v in schema.items() if not k.startswith("__")}
    if isinstance(schema, list):
        return [_strip_private(item) for item in schema]
    return schema


def _inline(schema: Any, named: dict[str, Any], seen: set[str]) -> Any:
    """``schema`` with each named reference replaced by its definition at first use."""
    if isinstance(schema, str):
        if schema in named and schema not in seen:
            return _inline(named[schema], named, seen)
        return schema
    if isinstance(schema, list):
        return [_inline(branch, named, seen) for branch in schema]
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind in _NAMED_KINDS:
            seen.add(schema["name"])
        out = {}
        for key, value in schema.items():
            if key.startswith("__"):
                continue
            if key == "fields":
                out[key] = [{**f, "type": _inline(f["type"], named, seen)} for f in value]
            elif key in ("type", "items", "values"):
                out[key] = _inline(value, named, seen)
            else:
                out[key] = value
        return out
    return schema


class SchemaCatalog:
    """All kept schema versions found in one directory, parsed once at construction."""

    def __init__(self, directory: Path = AVRO_DIR) -> None:
        self.directory = directory
        raw: dict[str, dict[int, tuple[Path, Any]]] = {}
        for path in sorted(directory.glob("*.avsc")):
            match = _FILE_NAME.match(path.name)
            if match is None:
                raise SchemaError(
                    f"{path}: schema files must be named <Name>.v<N>.avsc (e.g. Event.v1.avsc)"
                )
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise SchemaError(f"{path}: not valid JSON: {exc}") from exc
            raw.setdefault(match["name"], {})[int(match["version"])] = (path, document)
        self._versions: dict[str, list[SchemaVersion]] = {}
        self.named_schemas: dict[str, Any] = {}
        """The named types of every current version, for parsing schemas that refer to them."""
        self._parse_current(raw)
        pins = _read_pins(directory)
        for name, by_version in raw.items():
            for version, (path, document) in by_version.items():
                if version != max(by_version):
                    named = self._pinned_names(raw, pins.get(f"{name}.v{version}", {}), path)
                    self._add(name, version, path, document, named)
            self._versions[name].sort(key=lambda v: v.version)
        self._by_fingerprint = {
            v.fingerprint: v for versions in self._versions.values() for v in versions
        }

    def _parse_current(self, raw: dict[str, dict[int, tuple[Path, Any]]]) -> None:
        # Parse current versions until every reference resolves; a file naming
        # a type that no file defines stops the loop with an error naming both.
        pending = {name: max(by_version) for name, by_version in raw.items()}
        while pending:
            progress = False
            missing: dict[str, str] = {}
            for name, version in list(pending.items()):
                path, document = raw[name][version]
                named = dict(self.named_schemas)
                try:
                    self._add(name, version, path, document, named)
                except UnknownType as exc:
                    missing[name] = exc.name
                    continue
                self.named_schemas.update(named)
                del pending[name]
                progress = True
            if not progress:
                name, unknown = next(iter(missing.items()))
                raise SchemaError(
                    f"{raw[name][pending[name]][0]}: refers to the named type {unknown!r} "
                    f"that no schema file in {self.directory} defines"
                )

    def _pinned_names(
        self, raw: dict[str, dict[int, tuple[Path, Any]]], pinned: dict[str, int], path: Path
    ) -> dict[str, Any]:
        """The named types for parsing a kept version: the current ones, with the versions
        ``pinned`` for it instead (their own named types included)."""
        named = dict(self.named_schemas)
        for ref_name, ref_version in pinned.items():
            if ref_version not in raw.get(ref_name, {}):
                raise SchemaError(
                    f"{self.directory / _PINS}: {path.name} pins {ref_name}.v{ref_version}, "
                    "which is not kept"
                )
            scratch = dict(named)
            parse_schema(raw[ref_name][ref_version][1], named_schemas=scratch)
            named.update(scratch)
        return named

    def _add(
        self, name: str, version: int, path: Path, document: Any, named: dict[str, Any]
    ) -> None:
        try:
            parsed = parse_schema(document, named_schemas=named)
        except UnknownType:
            raise
        except Exception as exc:  # fastavro raises several kinds for a bad schema
            raise SchemaError(f"{path}: not a valid Avro schema: {exc}") from exc
        if not isinstance(parsed, dict) or "name" not in parsed:
            raise SchemaError(f"{path}: the top-level schema must be a named record")
        inlined = _inline(parsed, named, set())
        canonical = to_parsing_canonical_form(inlined)
        self._versions.setdefault(name, []).append(
            SchemaVersion(
                name=name,
                version=version,
                path=path,
                fullname=parsed["name"],
                parsed=parsed,
                canonical_form=canonical,
                fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
                schema_text=json.dumps(inlined, separators=(",", ":")),
            )
        )

    def names(self) -> list[str]:
        """The schema names kept, e.g. ``["Event", "Run", "Violation"]``."""
        return sorted(self._versions)

    def versions(self, name: str) -> list[SchemaVersion]:
        """Every kept version of ``name``, oldest first."""
        try:
            return list(self._versions[name])
        except KeyError:
            raise SchemaError(
                f"no schema named {name!r} in {self.directory}; known: {', '.join(self.names())}"
            ) from None

    def current(self, name: str) -> SchemaVersion:
        """The version of ``name`` writers use and readers resolve to (the highest)."""
        return self.versions(name)[-1]

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        """The kept version with this CRC-64-AVRO fingerprint (header byte order), if any."""
        return self._by_fingerprint.get(fingerprint)

    def __iter__(self) -> Iterator[SchemaVersion]:
        for name in self.names():
            yield from self._versions[name]


_PINS = "references.json"


def _read_pins(directory: Path) -> dict[str, dict[str, int]]:
    path = directory / _PINS
    if not path.exists():
        return {}
    try:
        pins = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise SchemaError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(pins, dict) or not all(
        isinstance(v, dict) and all(isinstance(n, int) for n in v.values()) for v in pins.values()
    ):
        raise SchemaError(f'{path}: expected {{"<Name>.v<N>": {{"<Name>": <version>}}}}')
    return pins


@functools.cache
def default_catalog() -> SchemaCatalog:
    """The catalog of the package's own ``schemas/avro`` directory, loaded on first use."""
    return SchemaCatalog()
