"""The Java interop checker (``interop/java``): built once per session, run as a subprocess.

``interop/java`` is a small Maven project over Apache Avro's Java library and Kafka's
Java client (see ``interop/README.md``). :func:`java_interop` builds it when ``mvn`` and a
Java 17+ ``java`` are present and skips with the reason otherwise. The build lands in
``interop/java/target`` (git-ignored) with a stamp of the sources it was built from, so a
later session, or the second test module of this one, reuses it without starting Maven.
Maven's own cache (``~/.m2``) is the one runfold's local broker resolves its jars into
(:mod:`runfold.kafka.jars`); Maven is tried offline first and goes online only when the
cache lacks something.

Also here: edge-case events (every variant, nanosecond and pre-1970 timestamps, unicode,
floats, extreme integers) and their Avro JSON encoding, for both directions of the check.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from runfold.kafka.jars import find_java
from schemas import (
    EVENT_KINDS,
    CheckpointDeleted,
    CheckpointRestored,
    CheckpointSaved,
    Event,
    GraphCompleted,
    GraphFailed,
    GraphInterrupted,
    GraphStarted,
    MessageAdded,
    NodeEntered,
    NodeExited,
    NodeFailed,
    NodeRetrying,
    StateUpdated,
    Timestamp,
    ToolCalled,
    ToolFailed,
    ToolReturned,
    serde,
)
from schemas.catalog import AVRO_DIR
from schemas.errors import KafkaSetupError

REPO = Path(__file__).resolve().parents[2]
JAVA_PROJECT = REPO / "interop" / "java"
TARGET = JAVA_PROJECT / "target"
JAR = TARGET / "runfold-java-interop.jar"
MAIN_CLASS = "dev.runfold.interop.Main"
_STAMP = TARGET / ".runfold-build-stamp"
_BUILD_TIMEOUT = 900


class JavaCheckFailed(AssertionError):
    """The Java checker exited with an error (its stderr is in the message)."""


@dataclass(frozen=True)
class JavaInterop:
    """The built checker, and how long getting it took this session."""

    java: str
    build_seconds: float
    built: bool
    """False when the stamp showed an up-to-date build and Maven was not run."""

    def run(self, *args: str, timeout: float = 300.0) -> list[dict[str, Any]]:
        """Run one command of the checker; its stdout JSON lines, parsed."""
        cmd = [
            self.java,
            "-cp",
            f"{JAR}:{TARGET / 'lib'}/*",
            MAIN_CLASS,
            "--schemas",
            str(AVRO_DIR),
            *args,
        ]
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise JavaCheckFailed(
                f"`{' '.join(args)}` exited {done.returncode}: "
                f"{done.stderr.decode(errors='replace')[-2000:]}"
            )
        return [json.loads(line) for line in done.stdout.decode().split("\n") if line.strip()]


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted([JAVA_PROJECT / "pom.xml", *JAVA_PROJECT.glob("src/**/*.java")]):
        digest.update(str(path.relative_to(JAVA_PROJECT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _mvn_package(mvn: str, offline: bool) -> subprocess.CompletedProcess[str]:
    cmd = [mvn, "-q", "-B", *(["-o"] if offline else []), "-f", str(JAVA_PROJECT / "pom.xml"),
           "package"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=_BUILD_TIMEOUT, check=False)


@functools.cache
def build_java_interop() -> JavaInterop:
    """Build ``interop/java`` if its sources changed since the last build; skip if no JDK/Maven.

    Cached per process, so every test module importing :func:`java_interop` shares one build.
    """
    try:
        java = find_java()
    except KafkaSetupError as exc:
        pytest.skip(f"Java interop needs Java 17+: {exc}")
    mvn = shutil.which("mvn")
    javac = shutil.which("javac")
    if mvn is None or javac is None:
        pytest.skip("Java interop needs Maven (`mvn`) and a JDK (`javac`): "
                    "apt-get install maven openjdk-17-jdk-headless")
    started = time.monotonic()
    TARGET.mkdir(exist_ok=True)
    wanted = _sources_digest()
    with open(TARGET / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers: one build, the others wait
        if JAR.is_file() and _STAMP.is_file() and _STAMP.read_text() == wanted:
            return JavaInterop(java, time.monotonic() - started, built=False)
        done = _mvn_package(mvn, offline=True)
        if done.returncode != 0:  # ~/.m2 lacks something: the first build resolves online
            done = _mvn_package(mvn, offline=False)
        if done.returncode != 0 or not JAR.is_file():
            errors = [ln for ln in (done.stdout + done.stderr).splitlines() if "ERROR" in ln]
            raise JavaCheckFailed("mvn package failed in interop/java: "
                                  + "\n".join(errors[:15] or [f"exit {done.returncode}"]))
        _STAMP.write_text(wanted)
    return JavaInterop(java, time.monotonic() - started, built=True)


@pytest.fixture(scope="session")
def java_interop() -> JavaInterop:
    """The Java checker, built (or found up to date) once per session."""
    return build_java_interop()


# --- what the Java side must agree with ---------------------------------------------------

def kind_record_name(event: Event) -> str:
    """The Avro full name of the event's ``kind`` union branch, e.g. ``runfold.NodeEntered``."""
    return f"runfold.{type(event.kind).__name__}"


def kind_avro_json(event: Event) -> dict[str, Any]:
    """The ``kind`` union value in Avro's JSON encoding: ``{"runfold.X": {fields}}``."""
    fields = event.kind.model_dump(mode="python")
    fields.pop("type")
    for name, value in list(fields.items()):
        if isinstance(value, tuple):
            fields[name] = list(value)
        elif name == "next_node" and value is not None:
            fields[name] = {"string": value}  # a non-null branch of ["null", "string"]
    return {kind_record_name(event): fields}


def event_avro_json(event: Event) -> dict[str, Any]:
    """The whole Event in Avro's JSON encoding (what Avro's JsonEncoder writes)."""
    return {
        "run_id": str(event.run_id),
        "seq": event.seq,
        "timestamp": int(event.timestamp),
        "kind": kind_avro_json(event),
        "payload": serde.dumps(event.payload),
    }


_UNICODE = "h\u00e9llo w\u00f6rld \u2713 \u65e5\u672c\u8a9e \U0001f680 \u00a0\u2028"
_FLOATS = [0.1, 1e-7, 1e16, 1.5e300, -0.0, 5e-324, 1.7976931348623157e308, 123456.789]
_U32_MAX = 2**32 - 1
_LONG_MAX = 2**63 - 1


def edge_events() -> list[Event]:
    """Every variant once, with values at the edges of what the wire carries.

    Two runs: one in 2026 with nanosecond digits, one before 1970 (negative nanoseconds).
    Seqs are not a valid fold order (``seq`` reaches 2**63 - 1): these test the codec only.
    """
    run_a = UUID("0198c0de-7a1b-7c3d-8e4f-a1b2c3d4e5f6")
    run_b = UUID("00000000-0000-4000-8000-000000000001")
    base = 1_767_225_600_123_456_789
    kinds = [
        GraphStarted(),
        GraphCompleted(iterations=_U32_MAX, duration_ms=_LONG_MAX),
        GraphFailed(error=_UNICODE),
        NodeEntered(node_id="", iteration=0),
        NodeExited(node_id="n\u00f6de", next_node=None, duration_ms=0),
        NodeExited(node_id="a", next_node="b \U0001f680", duration_ms=1),
        NodeFailed(node_id="x", error="quote\" backslash\\ nul\u0000 tab\t"),
        ToolCalled(tool_name="search \u2192 web"),
        ToolReturned(tool_name="t"),
        ToolFailed(tool_name="t"),
        CheckpointSaved(checkpoint_id="cp-1", node_id="n"),
        CheckpointRestored(checkpoint_id="cp-1", node_id="n"),
        CheckpointDeleted(checkpoint_id="cp-\u00e9"),
        StateUpdated(node_id="n", keys_changed=()),
        StateUpdated(node_id="n", keys_changed=("messages", "\u00fcber", "")),
        MessageAdded(role="assistant", content_length=_LONG_MAX),
        GraphInterrupted(reason="human_review", node_id="n"),
        GraphInterrupted(reason="cancelled", node_id="n"),
        NodeRetrying(node_id="n", attempt=_U32_MAX, delay_ms=_LONG_MAX),
    ]
    payloads: list[Any] = [
        {"floats": _FLOATS, "text": _UNICODE},
        {"nested": {"deep": [{"a": [1, 2.5, None, True]}], "z": 1, "a": 2}},
        {"big": 2**64 - 1, "neg": -(2**63), "beyond_double": 9_007_199_254_740_993},
        None,
        [],
        "just a string \U0001f680",
        3.0,
        {},
    ]
    events = []
    for index, kind in enumerate(kinds):
        negative = index % 2 == 1
        events.append(
            Event(
                run_id=run_b if negative else run_a,
                seq=_LONG_MAX if index == len(kinds) - 1 else index + 1,
                timestamp=Timestamp(-1_000_000_001 - index if negative else base + index * 7),
                kind=kind,
                payload=payloads[index % len(payloads)],
            )
        )
    return events


ALL_VARIANTS = frozenset(f"runfold.{cls.__name__}" for cls in EVENT_KINDS.values())


def write_hex_lines(path: Path, values: Sequence[bytes]) -> Path:
    """One lower-case hex message per line: the framing the checker reads."""
    path.write_text("".join(value.hex() + "\n" for value in values))
    return path
