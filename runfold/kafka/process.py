"""Process helpers for the local broker: is a pid alive and ours, stop it surely, spot failures.

Only Linux ``/proc`` is used to check that a recorded pid is still the JVM runfold started
(pids are reused), so ``kafka down`` never signals a stranger.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "die_with_parent",
    "is_alive",
    "is_ours",
    "port_is_free",
    "free_port",
    "stop_pids",
    "startup_failure",
]


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs; our own children count as running until reaped.

    A JVM's main thread turns zombie while its other threads still exit (and still hold its
    ports and files); ``waitpid`` only reaps once they are all gone, so for our children the
    reaping, not the zombie state, is the end. Someone else's zombie counts as dead.
    """
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        return reaped != pid
    except ChildProcessError:
        pass  # not our child: ask /proc
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def is_ours(pid: int, marker: str) -> bool:
    """True when ``pid`` is alive and its command line contains ``marker`` (our config path)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return marker in cmdline and is_alive(pid)


def stop_pids(pids: Iterable[int], *, timeout: float = 20.0) -> list[int]:
    """SIGTERM every pid at once, SIGKILL what is left after ``timeout`` s; return the pids stopped.

    Signalling all nodes at once matters for a 3-node cluster: stopped one by one, the last
    nodes lose their controller quorum and wait out their shutdown timeouts.
    """
    live = [pid for pid in pids if is_alive(pid)]
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(is_alive(pid) for pid in live):
        time.sleep(0.1)
    for pid in live:
        if is_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and any(is_alive(pid) for pid in live):
        time.sleep(0.05)
    return live


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` and it can be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str, taken: set[int]) -> int:
    """A port the kernel says is free now, not in ``taken``."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get SIGTERM when its parent dies (Linux prctl).

    The pytest fixture uses it so a killed test run does not leave a broker behind.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def _preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return _preexec


# Known causes of a broker exiting during start-up, and what to tell the user.
_CAUSES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"Address already in use", re.I),
        "a port is busy (another broker?): choose another with `runfold kafka up --port N`",
    ),
    (
        re.compile(
            r"Invalid cluster\.id|meta\.properties|Inconsistent (?:node|cluster)|"
            r"InconsistentClusterIdException|CorruptRecordException|corrupt|"
            r"Error while reading .*/data/",
            re.I,
        ),
        "its data directory is corrupt or from another cluster: "
        "`runfold kafka down --wipe` deletes it, then run `runfold kafka up` again",
    ),
    (
        re.compile(r"UnsupportedClassVersionError", re.I),
        "Java is too old: Kafka 4 needs Java 17+ (set JAVA_HOME)",
    ),
    (
        re.compile(r"OutOfMemoryError|Could not reserve enough space", re.I),
        "the JVM ran out of memory: free some or lower the heap",
    ),
]


def startup_failure(log_files: Iterable[Path]) -> tuple[str, str]:
    """(first error line, advice) read from a broker's logs after it died during start-up."""
    first_error = ""
    text = ""
    for path in log_files:
        with contextlib.suppress(OSError):
            text += path.read_text(errors="replace")[-200_000:]
    # A Java exception line ("java.io.UncheckedIOException: Error while reading ...") says more
    # than the ERROR line that logged it; fall back to the first ERROR line.
    lines = text.splitlines()
    exception = re.compile(r"^(?:[\w$]+\.)+[\w$]*(?:Exception|Error)\b:?")
    error = re.compile(r"\b(ERROR|FATAL)\b|^Error:")
    for pattern in (exception, error):
        first_error = next((ln.strip()[:300] for ln in lines if pattern.search(ln)), "")
        if first_error:
            break
    for pattern, advice in _CAUSES:
        if pattern.search(text):
            return first_error, advice
    return first_error, "see the log for details"
