"""``runfold kafka up/status/down`` as a user runs them: real JVMs, real pids, real ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runfold.kafka.process import is_alive

pytestmark = pytest.mark.integration


def _runfold(
    *args: str, home: Path, env: dict[str, str] | None = None, timeout: float = 400
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "RUNFOLD_HOME": str(home), **(env or {})}
    environment.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return subprocess.run(
        [sys.executable, "-m", "runfold", *args, *_patience(args)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        check=False,
    )


def _patience(args: tuple[str, ...]) -> list[str]:
    # `up` waits up to 120 s by default; a loaded CI machine may need longer.
    return ["--timeout", "300"] if args[:2] == ("kafka", "up") else []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _our_java_pids(home: Path) -> list[int]:
    """JVMs whose command line mentions ``home`` (how we prove nothing is left behind)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(home) in cmdline and is_alive(int(proc.name)):
                pids.append(int(proc.name))
    return pids


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in last, last
    return last


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java 17+")


@needs_java
def test_up_twice_status_down_leaves_no_process_then_corrupt_data_is_one_line(
    tmp_path: Path,
) -> None:
    port = _free_port()
    first = _runfold("kafka", "up", "--backend", "jvm", "--port", str(port), home=tmp_path)
    try:
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip().splitlines()[-1] == f"bootstrap=127.0.0.1:{port}"
        pids = _our_java_pids(tmp_path)
        assert len(pids) == 1

        second = _runfold("kafka", "up", "--backend", "jvm", "--port", str(port), home=tmp_path)
        assert second.returncode == 0
        assert "already running" in second.stderr
        assert second.stdout.strip().splitlines()[-1] == f"bootstrap=127.0.0.1:{port}"
        assert _our_java_pids(tmp_path) == pids  # nothing new started

        status = _runfold("kafka", "status", home=tmp_path)
        assert f"alive  pid={pids[0]}" in status.stdout
        assert status.stdout.strip().splitlines()[-1] == f"running  bootstrap=127.0.0.1:{port}"

        busy = _runfold(
            "kafka", "up", "--backend", "jvm", "--port", str(port), home=tmp_path / "other"
        )
        _assert_one_line_error(busy, f"port {port}", "busy", "--port")
    finally:
        down = _runfold("kafka", "down", home=tmp_path)
    assert down.returncode == 0
    assert f"stopped pid(s) {pids[0]}" in down.stdout
    assert _our_java_pids(tmp_path) == []
    assert "stopped" in _runfold("kafka", "status", home=tmp_path).stdout

    # The broker's own metadata log is damaged: the JVM starts, dies, and we say what to do.
    quorum_state = tmp_path / "kafka" / "node-1" / "data" / "__cluster_metadata-0" / "quorum-state"
    quorum_state.write_text("{garbage")
    broken = _runfold("kafka", "up", "--backend", "jvm", "--port", str(port), home=tmp_path)
    _assert_one_line_error(broken, "corrupt", "runfold kafka down --wipe")
    assert _our_java_pids(tmp_path) == []


@needs_java
def test_unreadable_meta_properties_is_one_clear_line(tmp_path: Path) -> None:
    data = tmp_path / "kafka" / "node-1" / "data"
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("not kafka\n")
    result = _runfold("kafka", "up", "--backend", "jvm", "--port", "0", home=tmp_path)
    _assert_one_line_error(result, "corrupt", "runfold kafka down --wipe")
    assert len(result.stderr.strip().splitlines()) == 1


@needs_java
def test_busy_default_port_suggests_port_option(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = _runfold("kafka", "up", "--backend", "jvm", "--port", str(port), home=tmp_path)
    _assert_one_line_error(result, "busy", "--port")
    assert _our_java_pids(tmp_path) == []


def test_missing_java_is_one_clear_line(tmp_path: Path) -> None:
    result = _runfold(
        "kafka",
        "up",
        "--backend",
        "jvm",
        home=tmp_path,
        env={"PATH": str(tmp_path / "empty-bin"), "JAVA_HOME": ""},
    )
    _assert_one_line_error(result, "Java not found")
    assert len(result.stderr.strip().splitlines()) == 1


def test_down_when_nothing_runs_is_harmless(tmp_path: Path) -> None:
    result = _runfold("kafka", "down", home=tmp_path)
    assert result.returncode == 0
    assert "no local Kafka was running" in result.stdout
