"""Pure parts of ``runfold serve``: event parsing, the store's queries, the exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import serve
from producers import ListSink, RunRecorder
from serve.ingest import parse_events, results_body
from serve.store import BadCursor, RunFilter, RunRow, ViewBatch, ViewReader, kind_mask, open_view

pytestmark = pytest.mark.unit


def test_exports_are_importable() -> None:
    assert sorted(serve.__all__) == serve.__all__
    for name in serve.__all__:
        assert getattr(serve, name) is not None


def _event_lines() -> list[str]:
    sink = ListSink()
    with RunRecorder(sink).run("spec", "sha", {}) as run:
        run.complete()
    return [event.to_json() for event in sink.events]


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"seq": "one"}, "seq", "integer"),
        ({"seq": 2**64}, "seq", "valid integer"),  # serde reads it as a float
        ({"kind": {"type": "node_retrying", "node_id": "a", "attempt": -1, "delay_ms": 1}},
         "kind.attempt", "greater than or equal to 0"),
        ({"timestamp": "2026-13-01T00:00:00Z"}, "timestamp", ""),
    ],
)
def test_a_bad_field_is_named(change: dict[str, object], field: str, reason: str) -> None:
    good = json.loads(_event_lines()[0])
    body = "\n".join([_event_lines()[0], json.dumps({**good, **change})]).encode()
    events, rejected = parse_events(body, ndjson=True, max_event_bytes=10_000)
    assert [i for i, _ in events] == [0]
    assert len(rejected) == 1 and rejected[0].index == 1
    assert rejected[0].field == field
    assert reason in rejected[0].reason


def test_blank_lines_are_skipped_and_keep_their_index() -> None:
    lines = _event_lines()
    body = f"{lines[0]}\n\n{lines[1]}\n".encode()
    events, rejected = parse_events(body, ndjson=True, max_event_bytes=10_000)
    assert [i for i, _ in events] == [0, 2] and rejected == []


def test_answer_status() -> None:
    lines = _event_lines()
    events, rejected = parse_events(
        f"{lines[0]}\nnope\n".encode(), ndjson=True, max_event_bytes=10_000
    )
    assert results_body(events, rejected, True)[0] == 207
    assert results_body(events, [], True)[0] == 200
    assert results_body([], rejected, True)[0] == 400
    status, body = results_body(events, rejected, False)
    assert status == 503 and body["unacknowledged"] == 1 and body["accepted"] == 0


def _row(i: int, status: str = "COMPLETED", kinds: tuple[str, ...] = ()) -> RunRow:
    return RunRow(
        run_id=f"00000000-0000-0000-0000-{i:012d}", status=status,
        agent_spec_digest=f"agent-{i % 3}", started_ns=1_000 + i, finished_ns=None,
        events_applied=i, violation_mask=kind_mask(kinds), violations=len(kinds),
        updated_ms=0, stalled_ns=None, doc=json.dumps({"last_seq": i}),
    )


@pytest.fixture
def reader(tmp_path: Path) -> ViewReader:
    writer = open_view(tmp_path / "view.sqlite", "test")
    rows = [_row(i, "RUNNING" if i % 4 == 0 else "COMPLETED", ("gap",) if i % 5 == 0 else ())
            for i in range(40)]
    writer.apply(ViewBatch(runs={r.run_id: r for r in rows}))
    return ViewReader(tmp_path / "view.sqlite", stall_after_s=3600)


def _pages(reader: ViewReader, where: RunFilter, limit: int) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        runs, cursor = reader.list_runs(where, limit=limit, cursor=cursor)
        ids += [r["run_id"] for r in runs]
        if cursor is None:
            return ids


def test_pages_cover_every_match_once_newest_first(reader: ViewReader) -> None:
    every = _pages(reader, RunFilter(), 7)
    assert every == [_row(i).run_id for i in reversed(range(40))]
    gaps = _pages(reader, RunFilter(violation_kind="gap", status="COMPLETED"), 2)
    assert gaps == [_row(i).run_id for i in reversed(range(40)) if i % 5 == 0 and i % 4]
    # updated_ms 0 is long ago: every RUNNING run is stalled.
    stalled = _pages(reader, RunFilter(stalled=True), 3)
    assert stalled == [_row(i).run_id for i in reversed(range(40)) if i % 4 == 0]
    window = _pages(reader, RunFilter(started_after_ns=1_010, started_before_ns=1_020), 4)
    assert window == [_row(i).run_id for i in reversed(range(10, 20))]


def test_a_foreign_cursor_is_refused(reader: ViewReader) -> None:
    with pytest.raises(BadCursor, match="not a cursor"):
        reader.list_runs(RunFilter(), limit=5, cursor="eyJ4Ijox")


def test_a_view_of_other_topics_is_started_afresh(tmp_path: Path) -> None:
    writer = open_view(tmp_path / "v.sqlite", "a")
    writer.apply(ViewBatch(runs={"r": _row(1)}, offsets={("t", 0): 5}))
    writer.close()
    again = open_view(tmp_path / "v.sqlite", "a")
    assert again.offsets() == {("t", 0): 5}
    again.close()
    other = open_view(tmp_path / "v.sqlite", "b")
    assert other.offsets() == {}
    other.close()


def test_events_past_retention_are_deleted(tmp_path: Path) -> None:
    from serve.store import EventRow

    writer = open_view(tmp_path / "v.sqlite", "a")
    writer.apply(ViewBatch(events=[EventRow("r", seq, seq * 100, "x", b"") for seq in (1, 2, 3)]))
    assert writer.expire_events(older_than_ms=250) == 2
    assert writer.expire_events(older_than_ms=250) == 0


def test_one_writer_per_view(tmp_path: Path) -> None:
    from schemas.errors import ConfigError

    first = open_view(tmp_path / "v.sqlite", "a")
    with pytest.raises(ConfigError, match="another runfold serve is using the view"):
        open_view(tmp_path / "v.sqlite", "a")
    first.close()
    open_view(tmp_path / "v.sqlite", "a").close()


def test_serve_settings_from_the_environment_do_not_upset_the_kafka_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clients import RunfoldSettings
    from schemas.errors import ConfigError
    from serve import ServeSettings

    monkeypatch.setenv("RUNFOLD_SERVE_PORT", "9999")
    monkeypatch.setenv("RUNFOLD_SERVE_STALL_AFTER_S", "5")
    assert ServeSettings.load().port == 9999
    RunfoldSettings.load()  # RUNFOLD_SERVE_* belong to ServeSettings, not unknown here
    monkeypatch.setenv("RUNFOLD_SERVE_PROT", "1")
    with pytest.raises(ConfigError, match="RUNFOLD_SERVE_PROT"):
        ServeSettings.load()
