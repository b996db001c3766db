"""`runfold export` and `runfold sql`: Parquet read with DuckDB equals `runs list --json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner
from user_day_fixtures import expected_statuses, fold, prefix_of, send_fleet, settings_for

from clients.settings import TopicNames
from consumers.state import COUNTER_NAMES
from runfold.cli import main
from runfold.commands.export import build_tables, write_tables
from schemas import Timestamp


def _rows(con: duckdb.DuckDBPyConnection, query: str) -> list[dict[str, Any]]:
    result = con.execute(query)
    columns = [d[0] for d in result.description or []]
    return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]


def _ns(text: str | None) -> int | None:
    return None if text is None else int(Timestamp.parse(text))


def test_parquet_read_back_with_duckdb_equals_runs_list_json(
    kafka_bootstrap: str, unique_topics: TopicNames, tmp_path: Path
) -> None:
    settings = settings_for(kafka_bootstrap, unique_topics)
    manifest, _ = send_fleet(settings, runs=20, seed=5)
    stats = fold(settings)
    assert stats.balanced()
    common = ["--bootstrap-servers", kafka_bootstrap, "--prefix", prefix_of(unique_topics)]
    runner = CliRunner()
    listed = runner.invoke(main, ["runs", "list", "--json", *common])
    assert listed.exit_code == 0, listed.output
    documents = {doc["run"]["run_id"]: doc for doc in json.loads(listed.output)}
    exported = runner.invoke(main, ["export", "--format", "parquet", "--out", str(tmp_path),
                                    *common])
    assert exported.exit_code == 0, exported.output
    assert f"runs.parquet: {len(documents)} rows" in exported.output

    con = duckdb.connect()
    runs = _rows(con, f"SELECT * FROM read_parquet('{tmp_path / 'runs.parquet'}')")
    assert len(runs) == len(documents) == manifest["totals"]["runs"]
    for row in runs:
        doc = documents[row["run_id"]]
        run = doc["run"]
        for name in ("status", "agent_spec_digest", "git_sha", "final_state_digest"):
            assert row[name] == run[name], name
        assert row["started_at_ns"] == _ns(run["started_at"])
        assert row["finished_at_ns"] == _ns(run["finished_at"])
        # DuckDB's TIMESTAMPTZ keeps microseconds; the *_ns columns keep the rest.
        assert row["started_at"].timestamp() == pytest.approx(row["started_at_ns"] / 1e9, abs=1e-6)
        assert json.loads(row["inputs"]) == run["inputs"]
        assert (None if row["outputs"] is None else json.loads(row["outputs"])) == run["outputs"]
        assert row["last_seq"] == doc["last_seq"]
        assert row["pending"] == doc["pending"]
        assert {name: row[name] for name in COUNTER_NAMES} == doc["counters"]
        assert {k: row[f"violations_{k}"] for k in doc["violation_counts"]} == (
            doc["violation_counts"]
        )
        assert row["violations"] == sum(doc["violation_counts"].values())
    violations = _rows(con, f"SELECT * FROM read_parquet('{tmp_path / 'violations.parquet'}') "
                            "ORDER BY run_id, first_seq, kind")
    expected = sorted(
        (v for doc in documents.values() for v in doc["violations"]),
        key=lambda v: (v["run_id"], v["first_seq"], v["kind"]),
    )
    assert violations == expected
    assert len(violations) == manifest["totals"]["violations"] > 0

    # The same tables through `runfold sql`, live from Kafka and from the export.
    query = "SELECT status, count(*) AS n FROM runs GROUP BY 1 ORDER BY 1"
    live = runner.invoke(main, ["sql", query, "--format", "json", *common])
    assert live.exit_code == 0, live.output
    counts = {row["status"]: row["n"] for row in json.loads(live.output)}
    assert counts == {k: v for k, v in expected_statuses(manifest).items() if v}
    offline = runner.invoke(main, ["sql", query, "--format", "json", "--from", str(tmp_path)])
    assert json.loads(offline.output) == json.loads(live.output)


@pytest.mark.unit
def test_csv_export_and_errors(tmp_path: Path) -> None:
    from consumers import apply_event
    from consumers.run_view import RunView
    from producers import FaultRates, Fleet, FleetConfig
    from schemas.codec import decode_event

    fleet = Fleet(FleetConfig(runs=6, agents=2, seed=2, faults=FaultRates.parse("gap=0.5")))
    states: dict[str, Any] = {}
    for key, value, _meta in fleet.records():
        event = decode_event(value)
        states[key.decode()], _ = apply_event(states.get(key.decode()), event)
    runs, violations = build_tables(RunView.of_state(s) for s in states.values())
    assert runs.num_rows == 6
    written = write_tables(runs, violations, tmp_path / "out", "csv")
    assert [p.name for p in written] == ["runs.csv", "violations.csv"]
    con = duckdb.connect()
    gaps = con.execute(f"SELECT sum(violations_gap) FROM read_csv_auto('{written[0]}')").fetchone()
    assert gaps is not None
    assert gaps[0] == fleet.manifest()["totals"].get("violations.gap", 0) > 0

    runner = CliRunner()
    file = tmp_path / "a-file"
    file.write_text("x")
    result = runner.invoke(main, ["export", "--out", str(file), "--bootstrap-servers",
                                  "127.0.0.1:1"])
    assert result.exit_code == 1 and "is a file; give a directory" in result.output
    missing = runner.invoke(main, ["sql", "SELECT 1", "--from", str(tmp_path)])
    assert missing.exit_code == 1
    assert "no runs.parquet or runs.csv" in missing.output
    bad = runner.invoke(main, ["sql", "SELECT nope FROM runs", "--from", str(tmp_path / "out")])
    assert bad.exit_code == 1 and "query failed" in bad.output
