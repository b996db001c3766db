"""Find Java and the Kafka broker's jars (resolved once from Maven Central into a cache).

The broker is not vendored: ``resources/pom.xml`` names ``kafka_2.13``, ``kafka-tools`` and a
log4j2 SLF4J binding, and Maven copies their runtime closure into
``<cache>/kafka-<version>/lib``. The cache lives outside the project (``$RUNFOLD_CACHE``, else
``$XDG_CACHE_HOME/runfold``, else ``~/.cache/runfold``) so a fresh clone on the same machine
starts without downloading again.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from schemas.errors import KafkaSetupError

__all__ = [
    "KAFKA_VERSION",
    "LOG4J_VERSION",
    "MIN_JAVA",
    "RESOURCES",
    "cache_root",
    "find_java",
    "kafka_lib",
]

KAFKA_VERSION = "4.1.1"
"""Kafka 4.0-4.2 log through SLF4J 1.7, which is why the pom uses ``log4j-slf4j-impl``."""
LOG4J_VERSION = "2.24.3"
MIN_JAVA = 17
"""Kafka 4 brokers need Java 17 or newer."""
RESOURCES = Path(__file__).resolve().parent.parent / "resources"

_STAMP = ".complete"


def cache_root() -> Path:
    """The directory runfold caches downloaded jars in (shared by every clone on a machine)."""
    explicit = os.environ.get("RUNFOLD_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "runfold"


def find_java() -> str:
    """Path of a ``java`` of version :data:`MIN_JAVA` or newer, from ``JAVA_HOME`` or ``PATH``.

    Raises :class:`KafkaSetupError` with what to install when there is none.
    """
    java: str | None = None
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        java = str(Path(java_home) / "bin" / "java")
    else:
        java = shutil.which("java")
    if java is None:
        raise KafkaSetupError(
            f"Java not found: the local Kafka broker needs Java {MIN_JAVA}+ on PATH or in "
            "JAVA_HOME (e.g. `apt-get install openjdk-17-jre-headless`), or point runfold at a "
            "running broker with KAFKA_BOOTSTRAP_SERVERS"
        )
    try:
        shown = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaSetupError(f"could not run {java} -version: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', shown)
    if match is None:
        raise KafkaSetupError(f"could not read the Java version from `{java} -version`")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise KafkaSetupError(
            f"{java} is Java {major}; Kafka 4 needs Java {MIN_JAVA}+: install a newer JDK "
            "or set JAVA_HOME to one"
        )
    return java


def kafka_lib(
    version: str = KAFKA_VERSION,
    *,
    cache: Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """The ``lib`` directory holding Kafka ``version``'s jars, resolving it with Maven if needed.

    Safe to call from several processes at once (a file lock serialises the download); a
    half-finished download is never used (the directory is renamed into place when complete).
    """
    base = (cache or cache_root()) / f"kafka-{version}"
    lib = base / "lib"
    if (base / _STAMP).is_file():
        return lib
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (base / _STAMP).is_file():  # another process finished while we waited
            return lib
        if echo is not None:
            echo(f"resolving Kafka {version} jars from Maven Central into {lib} (first run only)")
        _resolve(version, base, lib)
        (base / _STAMP).write_text("\n".join(sorted(p.name for p in lib.glob("*.jar"))) + "\n")
    return lib


def _resolve(version: str, base: Path, lib: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaSetupError(
            "Maven (`mvn`) not found: it resolves the Kafka jars once; install it "
            "(e.g. `apt-get install maven`) or set KAFKA_BOOTSTRAP_SERVERS to a running broker"
        )
    # Copy the pom next to the cache: the package directory may be read-only.
    pom = base / "pom.xml"
    shutil.copyfile(RESOURCES / "pom.xml", pom)
    staging = base / f"lib.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        f"-Dkafka.version={version}",
        f"-Dlog4j.version={LOG4J_VERSION}",
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired as exc:
        raise KafkaSetupError(
            "Maven took over 15 minutes to resolve the Kafka jars; check access to Maven Central"
        ) from exc
    if done.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
        errors = [
            line.strip() for line in (done.stdout + done.stderr).splitlines() if "ERROR" in line
        ]
        why = errors[0] if errors else f"mvn exited with {done.returncode}"
        shutil.rmtree(staging, ignore_errors=True)
        raise KafkaSetupError(
            f"could not resolve Kafka {version} with Maven: {why[:300]}; check access to "
            "Maven Central (or ~/.m2/settings.xml) and try again"
        )
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
