"""The folding service against a real broker: results equal the fleet's manifest, whatever happens.

Each test loads a simulated fleet (with faults) into unique topics, runs
``runfold consume`` as a subprocess (so kill -9 and SIGSTOP hit a real process),
and compares ``agent-runs``, ``agent-run-violations`` and the DLQ with the
simulator's ground truth.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from service_fixtures import (
    committed_total,
    header_map,
    load_fleet,
    mismatches,
    read_output,
    run_consume,
    start_consume,
    total_records,
)

from clients.settings import TopicNames
from consumers.service.dlq import DLQ_HEADERS, parse_dead_letter_headers
from runfold.commands.consume import EXIT_FENCED

pytestmark = pytest.mark.integration


def _wait_for(log: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {log} after {timeout}s:\n{log.read_text()[-2000:]}")


def _kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send ``sig``, wait for the exit; SIGKILL if it does not come (never leave it running)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def _wait_until(done: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout}s")
        time.sleep(0.2)


def test_fleet_with_faults_folds_to_the_manifest(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    manifest = load_fleet(kafka_bootstrap, unique_topics, runs=120, seed=11)

    status, stats, stderr = run_consume(kafka_bootstrap, unique_topics, "--until-idle", "2")

    assert status == 0, stderr
    folded = read_output(kafka_bootstrap, unique_topics)
    assert mismatches(folded, manifest) == []
    # Accounting: every record consumed ends in exactly one place.
    assert stats["consumed"] == total_records(manifest)
    # The fold's Tally (released events count in applied or violation too) plus the DLQ.
    pending = stats["buffered"] - stats["released"]
    assert 0 <= pending <= stats["buffered"]
    placed = sum(stats[k] for k in ("applied", "duplicate", "violation", "dlq")) + pending
    assert stats["consumed"] == placed + stats["replayed"]
    assert stats["replayed"] == 0
    assert stats["dlq"] == manifest["totals"]["dlq"] == len(folded.dlq)
    assert stats["duplicate"] == manifest["totals"]["duplicates"]
    assert stats["violations_emitted"] == manifest["totals"]["violations"]
    # DLQ records keep the original key and bytes, with headers saying why and where.
    assert folded.dlq, "the fleet was asked for corrupt records"
    for msg in folded.dlq:
        headers = header_map(msg.headers())
        assert set(DLQ_HEADERS) <= set(headers)
        letter = parse_dead_letter_headers(msg.headers())
        assert letter.source_topic == unique_topics.events
        assert letter.reason in {"wrong-magic", "unknown-fingerprint", "truncated", "invalid-body"}
        assert letter.exception == "DecodeError"
        assert (msg.key() or b"").decode() in folded.runs
        original = _read_at(
            kafka_bootstrap, letter.source_topic, letter.source_partition, letter.source_offset
        )
        assert original == (msg.key(), msg.value())


def _read_at(
    bootstrap: str, topic: str, partition: int, offset: int
) -> tuple[bytes | None, bytes | None]:
    from consumers.service.restore import iter_partition

    for msg in iter_partition({"bootstrap.servers": bootstrap}, topic, partition, stop=offset + 1):
        if msg.offset() == offset:
            return msg.key(), msg.value()
    raise AssertionError(f"no record at {topic}[{partition}]@{offset}")


def _kill_during_stream(
    bootstrap: str,
    topics: TopicNames,
    tmp_path: Path,
    *,
    kills: int,
    guarantee: str = "exactly-once",
    seed: int = 0,
) -> list[int]:
    """Start, let it fold for a random while after its restore, kill -9; ``kills`` times.

    Returns the group's committed offsets (summed) after each kill.
    """
    rng = random.Random(seed)
    progress: list[int] = []
    for attempt in range(kills):
        log = tmp_path / f"consume-{attempt}.log"
        proc = start_consume(
            bootstrap,
            topics,
            "-v",
            "--guarantee",
            guarantee,
            "--batch-size",
            "1000",
            "--session-timeout-ms",
            "6000",
            log=log,
        )
        try:
            _wait_for(log, "restored", timeout=60)
            time.sleep(rng.uniform(0.1, 1.2))
            assert proc.poll() is None, log.read_text()
        finally:
            _kill(proc)
        progress.append(committed_total(bootstrap, topics, "runfold"))
    return progress


def test_kill_9_at_random_points_loses_and_repeats_nothing(
    kafka_bootstrap: str, unique_topics: TopicNames, tmp_path: Path
) -> None:
    manifest = load_fleet(kafka_bootstrap, unique_topics, runs=500, seed=21)
    assert manifest["totals"]["events"] >= 20_000

    progress = _kill_during_stream(kafka_bootstrap, unique_topics, tmp_path, kills=3, seed=21)
    status, stats, stderr = run_consume(kafka_bootstrap, unique_topics, "--until-idle", "2")

    assert status == 0, stderr
    # A kill landed mid-stream: progress was committed, and not all of it (on a fast
    # machine the last ones may come after the stream was folded to its end).
    assert progress == sorted(progress)
    assert any(0 < p < total_records(manifest) for p in progress), progress
    assert mismatches(read_output(kafka_bootstrap, unique_topics), manifest) == []


@pytest.mark.slow
def test_kill_9_five_times_during_100k_events(
    kafka_bootstrap: str, unique_topics: TopicNames, tmp_path: Path
) -> None:
    manifest = load_fleet(kafka_bootstrap, unique_topics, runs=2500, seed=31)
    assert manifest["totals"]["events"] >= 100_000

    progress = _kill_during_stream(kafka_bootstrap, unique_topics, tmp_path, kills=6, seed=31)
    status, stats, stderr = run_consume(
        kafka_bootstrap, unique_topics, "--until-idle", "2", timeout=300
    )

    assert status == 0, stderr
    assert progress == sorted(progress)
    assert 0 < progress[-1] < total_records(manifest), progress
    # At least five kills hit an instance with work left (progress still below the end).
    assert sum(1 for p in progress if p < total_records(manifest)) >= 5, progress
    assert mismatches(read_output(kafka_bootstrap, unique_topics), manifest) == []


def test_at_least_once_kill_keeps_state_exact_and_may_repeat_outputs(
    kafka_bootstrap: str, unique_topics: TopicNames, tmp_path: Path
) -> None:
    manifest = load_fleet(kafka_bootstrap, unique_topics, runs=400, seed=41)

    _kill_during_stream(
        kafka_bootstrap, unique_topics, tmp_path, kills=2, guarantee="at-least-once", seed=41
    )
    # Idle for 5 s, not 2: on a loaded machine the first fetch after the assignment can
    # take longer than 2 s, and an instance that stops then has folded nothing.
    status, stats, stderr = run_consume(
        kafka_bootstrap, unique_topics, "--until-idle", "5", "--guarantee", "at-least-once"
    )

    assert status == 0, stderr
    folded = read_output(kafka_bootstrap, unique_topics)
    # Violations and DLQ records may repeat in at-least-once mode (docs/guarantees.md);
    # the runs themselves must still be exact: replayed events are skipped, not refolded.
    unique_violations = {(v.run_id, v.kind, v.first_seq): v for v in folded.violations}
    folded.violations = list(unique_violations.values())
    letters = {}
    for msg in folded.dlq:
        letter = parse_dead_letter_headers(msg.headers())
        letters[(letter.source_partition, letter.source_offset)] = msg
    folded.dlq = list(letters.values())
    assert mismatches(folded, manifest) == []


def test_two_consumers_one_killed_the_other_takes_over(
    kafka_bootstrap: str, unique_topics: TopicNames, tmp_path: Path
) -> None:
    manifest = load_fleet(kafka_bootstrap, unique_topics, runs=500, seed=51)
    common = (
        "-v",
        "--group",
        "pair",
        "--session-timeout-ms",
        "6000",
        "--transaction-timeout-ms",
        "10000",
        "--batch-size",
        "500",
    )
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    a = start_consume(kafka_bootstrap, unique_topics, *common, "--instance-id", "a", log=a_log)
    b = start_consume(
        kafka_bootstrap,
        unique_topics,
        *common,
        "--instance-id",
        "b",
        "--until-idle",
        "12",
        "--stats-json",
        log=b_log,
    )
    try:
        _wait_for(a_log, "restored", timeout=60)
        _wait_for(b_log, "restored", timeout=60)
        _kill(a)
        out, _ = b.communicate(timeout=120)
    finally:
        _kill(a)
        _kill(b)
    b_text = b_log.read_text()
    assert b.returncode == 0, b_text
    assert b_text.count("assigned") >= 2, "b never took over a's partitions"
    assert "partitions [0, 1, 2]" in b_text
    assert mismatches(read_output(kafka_bootstrap, unique_topics), manifest) == []


def test_stopped_instance_is_fenced_by_its_replacement_and_commits_nothing(
    kafka_bootstrap: str, unique_topics: TopicNames, tmp_path: Path
) -> None:
    manifest = load_fleet(kafka_bootstrap, unique_topics, runs=500, seed=61)
    # Stopped 0.5 s after its restore: mid-stream, most likely inside a transaction.
    _stop_replace_resume(kafka_bootstrap, unique_topics, tmp_path, manifest, idle=False)


def test_stopped_idle_instance_is_fenced_by_its_replacement_and_commits_nothing(
    kafka_bootstrap: str, unique_topics: TopicNames, tmp_path: Path
) -> None:
    manifest = load_fleet(kafka_bootstrap, unique_topics, runs=100, seed=62)
    # Stopped with everything folded and committed: no open transaction, nothing left
    # to fold after its replacement, so no produce or commit of its own can fail. It
    # resumes past its session timeout and rejoins the group (static membership lets
    # it); only the producer epoch its replacement bumped says it is a zombie.
    _stop_replace_resume(kafka_bootstrap, unique_topics, tmp_path, manifest, idle=True)


def _stop_replace_resume(
    bootstrap: str, topics: TopicNames, tmp_path: Path, manifest: dict[str, Any], *, idle: bool
) -> None:
    """SIGSTOP an instance, run its replacement to the end, SIGCONT it: it must stop, fenced,
    having committed nothing after its replacement started."""
    # A group of its own: a zombie left by an earlier test on this broker must not join it.
    group = f"zombie-{uuid.uuid4().hex[:8]}"
    session_ms = 6000
    common = (
        "-v",
        "--group",
        group,
        "--instance-id",
        "0",
        "--batch-size",
        "300",
        "--session-timeout-ms",
        str(session_ms),
    )
    old_log = tmp_path / "old.log"
    old = start_consume(bootstrap, topics, *common, log=old_log)
    try:
        _wait_for(old_log, "restored", timeout=120)
        if idle:
            _wait_until(
                lambda: committed_total(bootstrap, topics, group) == total_records(manifest),
                "the first instance to commit the whole fleet",
                timeout=180,
            )
        else:
            time.sleep(0.5)
        assert old.poll() is None, old_log.read_text()
        old.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        status, _, stderr = run_consume(
            bootstrap, topics, *common, "--until-idle", "3", timeout=300
        )
        assert status == 0, stderr
        after_replacement = read_output(bootstrap, topics)
        # Stopped past its session timeout whatever the replacement's speed: when it
        # resumes, its client has to rejoin the group.
        time.sleep(max(0.0, session_ms / 1000 + 2 - (time.monotonic() - stopped_at)))
        old.send_signal(signal.SIGCONT)
        old.wait(timeout=120)
    finally:
        _kill(old, signal.SIGCONT)
        _kill(old)
    text = old_log.read_text()
    assert old.returncode == EXIT_FENCED, text
    assert "fenced" in text
    # Nothing the zombie did after its replacement started is visible downstream.
    final = read_output(bootstrap, topics)
    assert final.runs_records == after_replacement.runs_records
    assert len(final.violations) == len(after_replacement.violations)
    assert mismatches(final, manifest) == []
