"""The kept Avro schemas: every version FULL-compatible with the current one, references resolve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from avro_samples import assert_full_compatible, read_across, sample_records
from fastavro.schema import parse_schema

from schemas import SchemaError, default_catalog
from schemas.avro_binary import PINNED
from schemas.catalog import AVRO_DIR, SchemaCatalog

pytestmark = pytest.mark.unit

CATALOG = default_catalog()
KEPT = [(v.name, v.version) for v in CATALOG]

ADDED_VIOLATION_KINDS = frozenset({"stalled", "forgotten_run"})
WIDENED_ENUMS = {("Violation", 1): ADDED_VIOLATION_KINDS, ("RunState", 1): ADDED_VIOLATION_KINDS}
"""Kept versions whose current successor added enum symbols: the only break of FULL
compatibility, said in schemas/avro/README.md (readers are upgraded before writers)."""

FIRST_FINGERPRINTS = {
    ("Event", 1): "19288e22297b6b4d",
    ("Run", 1): "90078ede1e1a3b9d",
    ("Violation", 1): "64d95027253b61bb",
    ("RunState", 1): "7feade7acdfc2988",
}


@pytest.mark.parametrize(("name", "version"), KEPT, ids=[f"{n}.v{v}" for n, v in KEPT])
def test_every_kept_version_is_full_compatible_with_the_current_one(
    name: str, version: int
) -> None:
    kept = next(v for v in CATALOG.versions(name) if v.version == version)
    added = WIDENED_ENUMS.get((name, version), frozenset())
    assert_full_compatible(kept.parsed, CATALOG.current(name).parsed, added)


@pytest.mark.parametrize(("name", "version"), sorted(FIRST_FINGERPRINTS))
def test_a_kept_version_keeps_its_fingerprint_when_a_type_it_refers_to_changes(
    name: str, version: int
) -> None:
    # RunState.v1 refers to runfold.Violation, which has a v2 now: references.json pins
    # it to Violation.v1, or every state written before would no longer be found.
    kept = next(v for v in CATALOG.versions(name) if v.version == version)
    assert kept.fingerprint.hex() == FIRST_FINGERPRINTS[(name, version)]


def test_a_pin_to_a_version_not_kept_is_named(tmp_path: Path) -> None:
    for path in AVRO_DIR.glob("*.avsc"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "references.json").write_text('{"RunState.v1": {"Violation": 7}}')
    with pytest.raises(SchemaError, match=r"RunState.v1.avsc pins Violation.v7"):
        SchemaCatalog(tmp_path)


def test_the_contract_schemas_are_kept() -> None:
    assert {"Event", "Run", "Violation"} <= set(CATALOG.names())
    for path in AVRO_DIR.glob("*.avsc"):
        assert json.loads(path.read_text())["namespace"] == "runfold", path.name


def test_event_kind_is_a_union_of_sixteen_named_records() -> None:
    raw = json.loads((AVRO_DIR / "Event.v1.avsc").read_text())
    fields = {f["name"]: f["type"] for f in raw["fields"]}
    assert fields["run_id"] == {"type": "string", "logicalType": "uuid"}
    assert fields["timestamp"] == {"type": "long", "logicalType": "timestamp-nanos"}
    assert fields["payload"] == "string"
    assert len(fields["kind"]) == 16
    assert all(branch["type"] == "record" for branch in fields["kind"])


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_fast_path_is_pinned_to_the_current_version(name: str) -> None:
    # Not a correctness failure (other versions go through fastavro), a reminder:
    # a new current version needs schemas/avro_binary/ taught, or the codec slows down.
    assert CATALOG.current(name).fingerprint == PINNED[name], (
        f"{name}'s current version changed; update schemas/avro_binary/ and PINNED"
    )


def _event_v1() -> dict[str, Any]:
    return json.loads((AVRO_DIR / "Event.v1.avsc").read_text())


def evolved_event() -> dict[str, Any]:
    """A plausible Event v2: new optional fields with defaults, a doc change, a variant field."""
    schema = _event_v1()
    schema["fields"].append({"name": "trace_id", "type": ["null", "string"], "default": None})
    node_entered = next(b for b in schema["fields"][3]["type"] if b["name"] == "NodeEntered")
    node_entered["fields"].append({"name": "attempt", "type": "long", "default": 0})
    schema["doc"] = "changed docs do not matter"
    return schema


def test_a_synthetic_evolution_is_full_compatible() -> None:
    old = parse_schema(_event_v1())
    new = parse_schema(evolved_event())
    assert_full_compatible(old, new)
    record = sample_records(old)[3]
    assert read_across(old, new, record)["trace_id"] is None  # the default filled in


@pytest.mark.parametrize(
    "change",
    ["required field without default", "field type changed", "variant removed"],
)
def test_the_check_catches_an_incompatible_evolution(change: str) -> None:
    schema = _event_v1()
    if change == "required field without default":
        schema["fields"].append({"name": "tenant", "type": "string"})
    elif change == "field type changed":
        schema["fields"][1]["type"] = "string"  # seq
    else:
        schema["fields"][3]["type"] = schema["fields"][3]["type"][:-1]  # drop NodeRetrying
    with pytest.raises(Exception):  # noqa: B017 - fastavro raises several kinds
        assert_full_compatible(parse_schema(_event_v1()), parse_schema(schema))


def _write_catalog(tmp_path: Path, files: dict[str, Any]) -> SchemaCatalog:
    for name, schema in files.items():
        (tmp_path / name).write_text(json.dumps(schema))
    return SchemaCatalog(tmp_path)


STATE = {
    "type": "record",
    "name": "State",
    "namespace": "runfold",
    "fields": [
        {"name": "run", "type": "runfold.Run"},
        {"name": "previous", "type": ["null", "Run"], "default": None},
        {"name": "status", "type": "runfold.RunStatus"},
    ],
}


def test_named_types_resolve_across_files_in_any_order(tmp_path: Path) -> None:
    run = json.loads((AVRO_DIR / "Run.v1.avsc").read_text())
    # "A..." sorts before "Run...": the referring file is met first.
    catalog = _write_catalog(tmp_path, {"Run.v1.avsc": run, "AState.v1.avsc": STATE})
    state = catalog.current("AState")
    # The canonical form inlines Run at its first use only, as the Avro spec requires.
    assert state.canonical_form.count('"name":"runfold.Run","type":"record"') == 1
    assert '"type":["null","runfold.Run"]' in state.canonical_form
    # The self-contained text parses alone and has the same fingerprint.
    alone = parse_schema(json.loads(state.schema_text))
    assert fastavro.schema.to_parsing_canonical_form(alone) == state.canonical_form
    record = sample_records(state.parsed)[1]
    assert read_across(state.parsed, state.parsed, record) is not None


def test_a_reference_nobody_defines_is_named(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="runfold.Run"):
        _write_catalog(tmp_path, {"State.v1.avsc": STATE})


@pytest.mark.parametrize("file_name", ["Event.avsc", "Event.v0.avsc", "event-v1.avsc"])
def test_schema_files_must_be_named_name_dot_version(tmp_path: Path, file_name: str) -> None:
    with pytest.raises(SchemaError, match=r"<Name>\.v<N>\.avsc"):
        _write_catalog(tmp_path, {file_name: _event_v1()})


def test_versions_are_kept_oldest_first_and_found_by_fingerprint(tmp_path: Path) -> None:
    catalog = _write_catalog(
        tmp_path, {"Event.v1.avsc": _event_v1(), "Event.v2.avsc": evolved_event()}
    )
    v1, v2 = catalog.versions("Event")
    assert (v1.version, v2.version) == (1, 2)
    assert catalog.current("Event") is v2
    assert catalog.by_fingerprint(v1.fingerprint) is v1
    assert v1.fingerprint == CATALOG.current("Event").fingerprint
    assert catalog.by_fingerprint(bytes(8)) is None
    with pytest.raises(SchemaError, match="no schema named 'Nope'.*Event"):
        catalog.versions("Nope")


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(SchemaError, match="Violation"):
        CATALOG.current("Evnet")
