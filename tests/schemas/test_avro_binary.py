"""schemas.avro_binary's layouts are the kept .avsc files' records, field by field.

The byte-for-byte tests (test_codec.py, tests/consumers/test_state_bytes.py,
tests/producers/test_fleet_bytes.py) prove the code writes what fastavro writes; this
one proves the layouts the code is written against are the current schemas', so a
changed ``.avsc`` fails here by name rather than as a byte difference somewhere.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas import EVENT_KINDS, RunStatus, ViolationKind
from schemas.avro_binary import KIND_LAYOUTS, LAYOUTS, PINNED
from schemas.catalog import default_catalog

pytestmark = pytest.mark.unit

_LOGICAL = {"uuid": "uuid", "timestamp-nanos": "timestamp"}


def _records() -> tuple[dict[str, list[tuple[str, Any]]], dict[str, list[str]]]:
    """Every record of the current schemas (by short name) with its fields' raw types,
    and every enum with its symbols."""
    records: dict[str, list[tuple[str, Any]]] = {}
    enums: dict[str, list[str]] = {}

    def visit(schema: Any) -> None:
        if isinstance(schema, list):
            for branch in schema:
                visit(branch)
        elif isinstance(schema, dict):
            if schema["type"] == "record":
                fields = [(f["name"], f["type"]) for f in schema["fields"]]
                records[schema["name"].rpartition(".")[2]] = fields
                for field in schema["fields"]:
                    visit(field["type"])
            elif schema["type"] == "enum":
                enums[schema["name"].rpartition(".")[2]] = list(schema["symbols"])
            elif schema["type"] == "array":
                visit(schema["items"])

    catalog = default_catalog()
    for name in ("Event", "Run", "Violation", "RunState", "RunSummary", "RunMarker"):
        visit(json.loads(catalog.current(name).schema_text))  # references inlined
    return records, enums


def _type_text(schema: Any) -> str:
    """A field type in LAYOUTS' notation."""
    if isinstance(schema, str):
        return schema.rpartition(".")[2]  # "runfold.Run" -> "Run"
    if isinstance(schema, list):
        if len(schema) == 2 and schema[0] == "null":
            return f"optional {_type_text(schema[1])}"
        return "union<EventKind>"
    logical = schema.get("logicalType")
    if logical in _LOGICAL:
        return _LOGICAL[logical]
    kind = schema["type"]
    if kind == "record":
        return str(schema["name"]).rpartition(".")[2]
    if kind == "enum":
        return f"enum {schema['name'].rpartition('.')[2]}"
    if kind == "array":
        return f"array<{_type_text(schema['items'])}>"
    if kind == "fixed":
        return f"fixed {schema['size']}"
    return _type_text(kind)


RECORDS, ENUMS = _records()


def test_the_pinned_fingerprints_are_the_current_versions() -> None:
    catalog = default_catalog()
    for name, fingerprint in PINNED.items():
        assert catalog.current(name).fingerprint == fingerprint, name


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_each_layout_is_its_records_fields_in_order(name: str) -> None:
    fields = [(field, _type_text(schema)) for field, schema in RECORDS[name]]
    assert list(LAYOUTS[name]) == fields


def test_every_record_of_the_schemas_has_a_layout() -> None:
    kinds = {cls.__name__ for cls in EVENT_KINDS.values()}
    assert set(RECORDS) == set(LAYOUTS) | kinds


def test_the_kind_union_lists_the_kind_records_in_branch_order() -> None:
    (kind_union,) = [schema for field, schema in RECORDS["Event"] if field == "kind"]
    names = [branch["name"].rpartition(".")[2] for branch in kind_union]
    assert names == [cls.__name__ for cls in KIND_LAYOUTS]
    assert list(KIND_LAYOUTS) == list(EVENT_KINDS.values())
    for cls, layout in KIND_LAYOUTS.items():
        fields = [(field, _type_text(schema)) for field, schema in RECORDS[cls.__name__]]
        assert list(layout) == fields, cls.__name__


def test_enum_symbols_are_the_models_in_index_order() -> None:
    assert ENUMS["RunStatus"] == [status.value for status in RunStatus]
    assert ENUMS["ViolationKind"] == [kind.value for kind in ViolationKind]


@pytest.mark.parametrize("finished", [None, 1_767_225_600_015_752_073])
@pytest.mark.parametrize("status", list(RunStatus))
@pytest.mark.parametrize("size", [0, 5, 63, 64, 300])
def test_read_run_times_reads_what_read_run_record_reads(
    finished: int | None, status: RunStatus, size: int
) -> None:
    from schemas.avro_binary import read_run_record, read_run_times, write_run_record

    text = "é" * (size // 2) + "x" * (size % 2)  # lengths of one and two varint bytes
    buf = write_run_record(
        "6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab",
        text,
        "abc123",
        -(2**62) if finished is None else 1_767_225_600_000_272_029,
        finished,
        status,
        json.dumps({"q": text}),
        None if size % 2 else text,
        None if size > 63 else "sha256:" + text,
    ) + b"tail"
    record, end = read_run_record(buf, 0)
    assert read_run_times(buf, 0) == (record.started_at, record.finished_at, record.status, end)
    assert buf[end:] == b"tail"
    with pytest.raises(ValueError):
        read_run_times(buf[: end - 5], 0)  # a string cut short
