"""The demo's web view: ``runfold serve`` left running in the background after ``make demo``.

The demo is a process that ends; a server in one of its threads would end with it. So
with ``--keep`` the demo starts ``runfold serve`` as a process of its own (like the broker
it keeps), over the demo's topics, on port 8080 or a free one when 8080 is taken, waits
until the view holds the demo's runs and prints its URL. Its pid is recorded beside the
view (``.runfold/serve/demo-serve.pid``); a later demo replaces it, and ``runfold kafka
down`` (``make kafka-down``) stops it with the broker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from clients.cluster_state import default_home
from runfold.kafka.process import port_is_free
from schemas.errors import RunfoldError

__all__ = ["start_web_view", "stop_web_view"]

DEFAULT_PORT = 8080
_HOST = "127.0.0.1"
_URL = re.compile(r"runfold serve: (http://\S+/)")


def _pid_file(home: Path | None = None) -> Path:
    return (home or default_home()) / "serve" / "demo-serve.pid"


def stop_web_view(home: Path | None = None, timeout: float = 10.0) -> int | None:
    """Stop the demo's web view if one runs (by its recorded pid); returns that pid."""
    pid_file = _pid_file(home)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    pid_file.unlink(missing_ok=True)
    if not _is_demo_server(pid):
        return None  # gone, or the pid was reused by another program
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _is_demo_server(pid):
        time.sleep(0.1)
    if _is_demo_server(pid):
        os.kill(pid, signal.SIGKILL)
    return pid


def _is_demo_server(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in command and any(b"runfold" in part for part in command)


def start_web_view(
    bootstrap: str,
    prefix: str | None,
    *,
    expected_runs: int = 0,
    home: Path | None = None,
    timeout: float = 60.0,
) -> str:
    """Start ``runfold serve`` in the background over the demo's topics; returns its URL
    once the view holds ``expected_runs`` runs (or ``timeout`` has passed)."""
    stop_web_view(home)
    log_path = _pid_file(home).with_name("demo-serve.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    port = DEFAULT_PORT if port_is_free(_HOST, DEFAULT_PORT) else 0
    command = [sys.executable, "-m", "runfold", "serve", "--host", _HOST, "--port", str(port),
               "--bootstrap-servers", bootstrap, "--data-dir", str(log_path.parent)]
    if prefix:
        command += ["--prefix", prefix]
    with log_path.open("w") as log:
        process = subprocess.Popen(  # noqa: S603 - our own CLI, arguments from the demo
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the demo, like the broker it keeps
        )
    _pid_file(home).write_text(f"{process.pid}\n")
    deadline = time.monotonic() + timeout
    url = None
    while url is None:
        found = _URL.search(log_path.read_text(errors="replace"))
        url = found.group(1) if found else None
        if url is None and (process.poll() is not None or time.monotonic() > deadline):
            raise RunfoldError(
                f"the demo's web view did not start (`{' '.join(command[1:])}`); its output "
                f"is in {log_path}"
            )
        time.sleep(0.2)
    while time.monotonic() < deadline and not _view_holds(url, expected_runs):
        time.sleep(0.5)
    return url


def _view_holds(url: str, runs: int) -> bool:
    """Whether the view has read the topics to their end and serves ``runs`` runs or more."""
    try:
        with urllib.request.urlopen(f"{url}v1/fleet", timeout=5) as answer:  # noqa: S310
            fleet = json.load(answer)
    except (urllib.error.URLError, OSError, ValueError):
        return False  # not answering yet
    caught_up = bool((fleet.get("view") or {}).get("caught_up"))
    return caught_up and int(fleet.get("runs") or 0) >= runs
