"""The ``agent-runs`` record (``runfold.RunSummary``) and its reader.

The fast writer (:func:`consumers.state_bytes.outputs_writer`, the fields RunState and
RunSummary share written once) must write fastavro's bytes for both records; the fast
reader must read what fastavro reads; and the one reader of ``agent-runs`` values
(:meth:`FoldEdge.read_run`) must read a RunSummary and an old RunState record (any
framing, v1 and v2) to the same view.
"""

from __future__ import annotations

import io
import random

import fastavro
import pytest

from consumers.run_view import RunView
from consumers.service.edge import FoldEdge
from consumers.state import FoldConfig, RunState
from consumers.state_bytes import outputs_writer, summary_reader
from consumers.state_codec import summary_from_record, summary_to_record, to_record
from schemas import Violation, ViolationKind, codec
from schemas.catalog import default_catalog
from schemas.errors import DecodeError, RunfoldError
from schemas.framing import SINGLE_OBJECT_MAGIC
from tests.consumers.test_state_bytes import _states

pytestmark = pytest.mark.unit


def _same_reader_fields(view: RunView, state: RunState) -> None:
    """What a reader sees of ``state`` is in ``view``."""
    got = view.state
    assert got.run == state.run
    assert got.last_seq == state.last_seq
    assert got.counters() == state.counters()
    assert got.violation_counts == state.violation_counts
    assert list(got.violations) == list(state.violations)
    assert got.stalled_since == state.stalled_since
    assert view.pending == len(state.pending_events)
    oldest = min((int(e.timestamp) for e, _ in state.pending_events.values()), default=None)
    assert view.oldest_pending_at == oldest


@pytest.mark.parametrize("seed", [1, 2])
def test_both_records_are_fastavros_bytes_and_read_back(seed: int) -> None:
    write, read = outputs_writer(), summary_reader()
    assert write is not None and read is not None
    edge = FoldEdge.default()
    states = _states(seed, 120, FoldConfig())
    assert any(s.pending_events for s in states) and any(s.stalled_since is None for s in states)
    states[0].stalled_since = 1_700_000_000_000_000_000
    for state in states:
        changelog, summary = write(state)
        assert changelog == codec.encode_record("RunState", to_record(state))
        assert summary == codec.encode_record("RunSummary", summary_to_record(state))
        assert (changelog, summary) == edge.encode_records(state)
        fast = read(summary)
        assert fast is not None
        general = summary_from_record(codec.decode_record("RunSummary", summary))
        assert fast == general
        _same_reader_fields(RunView(*fast), state)


def test_the_summary_is_smaller_than_the_changelog_record() -> None:
    """Oversize shrinks the changelog record to fit: the summary must fit when it does."""
    edge = FoldEdge.default()
    for state in _states(3, 40, FoldConfig()):
        changelog, summary = edge.encode_records(state)
        assert len(summary) < len(changelog)


def test_the_summary_schema_starts_with_the_state_schemas_fields() -> None:
    """The fast writer writes the shared fields once for both: they must be the same."""
    catalog = default_catalog()
    state = catalog.current("RunState").parsed["fields"]
    summary = catalog.current("RunSummary").parsed["fields"]
    assert [f["name"] for f in summary[:6]] == [f["name"] for f in state[:6]]
    assert [f["name"] for f in summary[6:]] == ["pending", "oldest_pending_at"]


def test_the_reader_reads_new_and_old_records_alike() -> None:
    edge = FoldEdge.default()
    for state in _states(4, 30, FoldConfig())[::7]:
        changelog, summary = edge.encode_records(state)
        old_v2 = codec.encode_record("RunState", to_record(state))
        assert old_v2 == changelog
        new, old = edge.read_run(summary), edge.read_run(old_v2)
        _same_reader_fields(new, state)
        _same_reader_fields(old, state)
        assert old.state == state  # an old record holds the whole state


def test_the_reader_reads_an_old_runstate_v1_record() -> None:
    """agent-runs written before RunState v2 (and before the split): still readable."""
    edge = FoldEdge.default()
    state = _states(5, 10, FoldConfig())[-1]
    record = to_record(state)
    del record["stalled_since"]
    v1 = default_catalog().versions("RunState")[0]
    assert v1.version == 1
    out = io.BytesIO()
    out.write(SINGLE_OBJECT_MAGIC + v1.fingerprint)
    fastavro.schemaless_writer(out, v1.parsed, record)
    view = edge.read_run(out.getvalue())
    _same_reader_fields(view, state)


def test_damaged_summaries_get_the_general_paths_error() -> None:
    edge = FoldEdge.default()
    rng = random.Random(6)
    checked = 0
    for state in _states(6, 20, FoldConfig())[:60]:
        _, data = edge.encode_records(state)
        for _ in range(5):
            at = rng.randrange(10, len(data))
            damaged = data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]
            for candidate in (damaged, data[:at], data + b"\x00"):
                try:
                    expected: object = summary_from_record(
                        codec.decode_record("RunSummary", candidate)
                    )
                except Exception as exc:  # noqa: BLE001 - compared below
                    expected = type(exc)
                try:
                    got: object = tuple(edge.read_run(candidate))
                except Exception as exc:  # noqa: BLE001
                    got = type(exc)
                assert got == expected, candidate.hex()
                checked += 1
    assert checked > 500


def test_a_record_of_neither_schema_is_refused() -> None:
    edge = FoldEdge.default()
    violation = Violation(
        run_id="3f2a9c1e-7b4d-4e8a-9c0f-5d6e7f8a9b0c",
        kind=ViolationKind.GAP,
        first_seq=1,
        last_seq=2,
        message="x",
    )
    with pytest.raises(RunfoldError):
        edge.read_run(codec.encode_violation(violation))
    with pytest.raises(DecodeError):
        edge.read_run(b"\x07junk")
