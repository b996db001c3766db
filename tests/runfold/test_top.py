"""``runfold top``: the frame's content, and the real program driven in a tmux terminal."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from user_day_fixtures import (
    expected_statuses,
    expected_violations,
    fold,
    prefix_of,
    send_fleet,
    settings_for,
)

from clients.settings import RunfoldSettings, TopicNames
from runfold.live import FleetSnapshot, PartitionLag, RunSummary, ViolationRow, render_snapshot

RUN_A = "aaaaaaaa-0000-4000-8000-000000000001"
RUN_B = "bbbbbbbb-0000-4000-8000-000000000002"


def _text(snapshot: FleetSnapshot, width: int = 150) -> str:
    console = Console(record=True, width=width, color_system=None)
    console.print(render_snapshot(snapshot))
    return console.export_text()


@pytest.mark.unit
def test_frame_shows_every_panel_and_number() -> None:
    snapshot = FleetSnapshot(
        bootstrap="broker:9092", group="folders", topics=TopicNames(),
        runs_by_status={"RUNNING": 2, "COMPLETED": 40, "FAILED": 5, "CANCELLED": 1},
        events_applied=1234, dlq=3, violations_by_kind={"gap": 2, "conflict": 1},
        lag=[PartitionLag(0, 10, 0, 25), PartitionLag(1, None, 5, 9)],
        events_in_per_s=512.4, events_folded_per_s=498.0,
        recent_violations=[ViolationRow(RUN_A, "gap", 4, 6, "seq 4..6 never arrived")],
        slowest=[RunSummary(RUN_B, "COMPLETED", 0, 150_000_000_000, 70, 0)],
        failing=[RunSummary(RUN_A, "FAILED", 0, 1_500_000, 12, 3)],
        pending_events=7, pending_oldest_age_ns=42_500_000_000,
    )
    text = _text(snapshot)
    assert re.search(r"pending \(reorder\)\s+7", text)
    assert re.search(r"oldest pending\s+42.5 s", text)
    for panel in ("runs by status", "throughput", "consumer lag (group folders)",
                  "recent violations", "slowest runs", "failing runs"):
        assert panel in text
    assert re.search(r"COMPLETED\s+40", text) and re.search(r"total\s+48", text)
    assert "512/s" in text and "498/s" in text and "1,234" in text
    assert re.search(r"dead letters\s+3", text)
    assert "gap 2  conflict 1" in text and "4..6" in text
    # Lag: 25 - 10 on partition 0; nothing committed on 1, so all of 5..9 is behind.
    assert re.search(r"0\s+10\s+25\s+15", text) and re.search(r"1\s+—\s+9\s+4", text)
    assert re.search(r"all\s+19", text)
    assert "bbbbbbbb" in text and "2.5 min" in text and "2 ms" in text


@pytest.mark.unit
def test_first_frame_has_no_rates_and_empty_panels_say_so() -> None:
    snapshot = FleetSnapshot(
        bootstrap="b", group="g", topics=TopicNames(), runs_by_status={}, events_applied=0,
        dlq=0, violations_by_kind={}, lag=[], events_in_per_s=None, events_folded_per_s=None,
        recent_violations=[], slowest=[], failing=[],
    )
    text = _text(snapshot)
    assert re.search(r"events in\s+—", text)
    assert re.search(r"pending \(reorder\)\s+0", text) and re.search(r"oldest pending\s+—", text)
    assert "none yet" in text


@pytest.fixture
def tmux() -> Iterator[list[str]]:
    """``tmux -L <private socket>``; the server (and what runs in it) is killed afterwards."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed: the real-terminal check of `runfold top` needs it")
    command = ["tmux", "-L", f"runfold-test-{uuid.uuid4().hex[:8]}"]
    yield command
    subprocess.run([*command, "kill-server"], capture_output=True, check=False)


def _pane(tmux: list[str], until: str, timeout: float = 40.0) -> str:
    """Capture the pane until ``until`` (a regex) matches it."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = subprocess.run([*tmux, "capture-pane", "-p", "-t", "top"], capture_output=True,
                              text=True, check=False).stdout
        if re.search(until, text):
            return text
        time.sleep(0.3)
    raise AssertionError(f"{until!r} never appeared in the terminal:\n{text}")


def test_top_in_a_real_terminal(
    kafka_bootstrap: str, unique_topics: TopicNames, tmux: list[str]
) -> None:
    settings = settings_for(kafka_bootstrap, unique_topics)
    manifest, first = send_fleet(settings, runs=16, seed=9)
    group = f"test-top-{uuid.uuid4().hex[:6]}"
    fold(settings, group)
    command = (f"{sys.executable} -m runfold top --bootstrap-servers {kafka_bootstrap} "
               f"--prefix {prefix_of(unique_topics)} --group {group} --interval 0.5")
    subprocess.run([*tmux, "new-session", "-d", "-s", "top", "-x", "160", "-y", "60", command],
                   check=True)
    statuses = expected_statuses(manifest)
    text = _pane(tmux, rf"total\s+{sum(statuses.values())}\b")
    for status, count in statuses.items():
        assert re.search(rf"{status}\s+{count}\b", text), status
    assert re.search(rf"dead letters\s+{manifest['totals']['dlq']}\b", text)
    kinds = "  ".join(f"{k} {n}" for k, n in sorted(expected_violations(manifest).items()))
    assert kinds in text
    lag_total = re.compile(r"│\s+all\s+(\d[\d,]*)\s+│")
    assert [m.group(1) for m in lag_total.finditer(text)] == ["0"]

    # New records nobody folds: the view refreshes and shows them as lag.
    _, second = send_fleet(settings, runs=4, seed=10)
    text = _pane(tmux, rf"│\s+all\s+{second.records:,}\s+│")
    assert "runfold top" in text


SECRET = "hunter2-never-print-me"


@pytest.mark.unit
def test_settings_reach_top_and_no_command_prints_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from runfold.cli import main

    config = tmp_path / "runfold.toml"
    config.write_text(
        'bootstrap_servers = "127.0.0.1:1"\nsecurity_protocol = "SASL_SSL"\n'
        'sasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "alice"\n'
        f'sasl_password = "{SECRET}"\n'
        f'[librdkafka]\n"sasl.oauthbearer.client.secret" = "{SECRET}"\n'
        '"socket.connection.setup.timeout.ms" = "1000"\n'
    )
    for key in [k for k in os.environ if k.startswith("RUNFOLD_")]:
        monkeypatch.delenv(key)
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("RUNFOLD_CONFIG", str(config))
    settings = RunfoldSettings.load()
    assert settings.client_config()["sasl.oauthbearer.client.secret"] == SECRET
    assert SECRET not in repr(settings)
    runner = CliRunner()
    for command in ("top", "demo", "export", "sql", "consume", "produce"):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0 and SECRET not in result.output, command
    failed = runner.invoke(main, ["top", "--once", "--timeout", "1"])
    assert failed.exit_code == 1
    assert "127.0.0.1:1" in failed.output and SECRET not in failed.output
    shadowed = runner.invoke(main, ["top", "--once"], env={
        "RUNFOLD_LIBRDKAFKA": f'{{"sasl.password": "{SECRET}"}}'})
    assert shadowed.exit_code == 1
    assert "'sasl.password' is set with the 'sasl_password' setting" in shadowed.output
    assert SECRET not in shadowed.output


@pytest.mark.unit
def test_stalled_runs_are_shown_among_the_running() -> None:
    snapshot = FleetSnapshot(
        bootstrap="b", group="g", topics=TopicNames(),
        runs_by_status={"RUNNING": 7, "COMPLETED": 1, "FAILED": 0, "CANCELLED": 0},
        events_applied=9, dlq=0, violations_by_kind={"stalled": 3}, lag=[],
        events_in_per_s=None, events_folded_per_s=None, recent_violations=[], slowest=[],
        failing=[], stalled=3,
    )
    assert re.search(r"of them stalled\s+3", _text(snapshot))
    quiet = FleetSnapshot(**{**snapshot.__dict__, "stalled": 0})
    assert "stalled" not in _text(quiet).split("violations")[0]


@pytest.mark.unit
def test_the_reader_counts_running_runs_with_stalled_since() -> None:
    import uuid

    from clients import RunfoldSettings
    from consumers import RunState
    from consumers.service.edge import FoldEdge
    from runfold.live import FleetReader
    from schemas import Timestamp

    edge = FoldEdge.default()
    reader = FleetReader(RunfoldSettings())
    reader._read_run = edge.read_run
    for stalled_since in (None, 5, 6):
        state = RunState.new(uuid.uuid4(), Timestamp(1))
        state.stalled_since = stalled_since
        summary = edge.encode_records(state)[1]  # the agent-runs record
        reader._take(reader.topics.runs, str(state.run_id).encode(), summary)
    snapshot = reader.snapshot()
    assert snapshot.stalled == 2 and snapshot.runs_by_status["RUNNING"] == 3
