"""The Kafka Streams peer (``bench/peers/streams``): built with Maven on first use, run with Java.

The Maven project is built into ``bench/.work/streams-<hash>/`` where ``<hash>`` covers its
``pom.xml`` and Java sources, so a changed source builds again and an unchanged one is
reused without starting Maven (as the Python peers' environments are kept by their
requirements). Maven is tried offline first (``~/.m2`` already holds the broker's jars) and
goes online only when the cache lacks something.

Its state is read back from its changelog topic (``<application.id>-runs-changelog``):
keys are the run id (UTF-8), values the fixed binary layout of ``RunState.serialize`` in
``StreamsFold.java``.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.kafka_env import BenchError
from bench.peers.venvs import WORK

__all__ = ["MAIN_CLASS", "PROJECT", "STORE", "decode_state", "ensure_jar", "java_command"]

PROJECT = Path(__file__).resolve().parent / "streams"
MAIN_CLASS = "dev.runfold.bench.StreamsFold"
STORE = "runs"
"""The peer's state store: its changelog is ``<application.id>-runs-changelog``."""
_JAR = "runfold-streams-peer.jar"
_STATUS = ("RUNNING", "COMPLETED", "FAILED", "CANCELLED")
_HEAD = struct.Struct(">b6q")


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted([PROJECT / "pom.xml", *PROJECT.glob("src/**/*.java")]):
        digest.update(str(path.relative_to(PROJECT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_dir() -> Path:
    """Where the current sources' build lands (it may not exist yet)."""
    return WORK / f"streams-{_sources_digest()}"


def missing_tools() -> str | None:
    """Why the peer cannot be built or run here, or ``None`` when Java 17+ and Maven are found."""
    from runfold.kafka.jars import find_java
    from schemas.errors import RunfoldError

    try:
        find_java()
    except RunfoldError as exc:
        return f"no Java 17+: {exc}"
    if shutil.which("mvn") is None or shutil.which("javac") is None:
        return "Maven (`mvn`) and a JDK (`javac`) are needed to build it"
    return None


def ensure_jar(*, create: bool, echo: Callable[[str], None], timeout: float = 900.0) -> Path | None:
    """The build directory holding the jar and ``lib/``, built if ``create``; else ``None``.

    Raises :class:`BenchError` when Maven fails (its first error lines in the message).
    """
    target = build_dir()
    if (target / _JAR).is_file():
        return target
    if not create:
        return None
    mvn = shutil.which("mvn") or "mvn"
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / "streams.build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two benches or test workers: one build
        if (target / _JAR).is_file():
            return target
        echo(f"building the Kafka Streams peer into {target} (mvn package), once")
        started = time.monotonic()
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        done = None
        for offline in (True, False):
            cmd = [mvn, "-q", "-B", *(["-o"] if offline else []), "-f", str(PROJECT / "pom.xml"),
                   f"-Dpeer.build.dir={partial}", "package"]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                      check=False)
            except subprocess.TimeoutExpired as exc:
                raise BenchError(
                    f"building the Kafka Streams peer took over {timeout:.0f}s") from exc
            if done.returncode == 0:
                break
        assert done is not None
        if done.returncode != 0 or not (partial / _JAR).is_file():
            errors = [ln for ln in (done.stdout + done.stderr).splitlines() if "ERROR" in ln]
            shutil.rmtree(partial, ignore_errors=True)
            raise BenchError("building the Kafka Streams peer failed: "
                             + " | ".join(errors[:6] or [f"mvn exited {done.returncode}"]))
        partial.rename(target)
        echo(f"Kafka Streams peer built in {time.monotonic() - started:.0f}s")
    return target


def java_command(target: Path) -> list[str]:
    """``java -cp ... StreamsFold`` for the build in ``target`` (its options follow)."""
    from runfold.kafka.jars import find_java

    # A bounded heap: the machine is shared, and 1 GiB is far more than the fold keeps.
    return [find_java(), "-Xmx1g", "-cp", f"{target / _JAR}:{target / 'lib'}/*", MAIN_CLASS]


def decode_state(key: bytes, value: bytes) -> tuple[str, tuple[str, int, int]]:
    """``(run_id, (status, last_seq, events))`` from one changelog record of the peer."""
    status, last_seq, events, *_ = _HEAD.unpack_from(value)
    return key.decode(), (_STATUS[status], last_seq, events)
