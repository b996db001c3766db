"""Virtual environments for the peers, under ``bench/.work/`` (git-ignored), built on demand.

A peer pins libraries runfold does not (Quix Streams pins an older confluent-kafka), so each
gets its own environment. The requirements are written to a stamp file once installed; a
changed list rebuilds the environment.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.kafka_env import BenchError

__all__ = ["WORK", "ensure_venv", "venv_python"]

WORK = Path(__file__).resolve().parents[1] / ".work"
"""The benchmark's scratch directory (``bench/.work``, git-ignored)."""

_STAMP = "runfold-bench-requirements.txt"


def venv_python(name: str) -> Path:
    """The interpreter of the peer environment ``name``."""
    return WORK / f"{name}-venv" / "bin" / "python"


def ensure_venv(
    name: str,
    requirements: Sequence[str],
    *,
    create: bool,
    echo: Callable[[str], None],
    timeout: float = 900.0,
) -> Path | None:
    """The interpreter of ``bench/.work/<name>-venv`` with ``requirements`` installed.

    When it is missing (or was built for other requirements) it is built if ``create``,
    else ``None`` is returned. Raises :class:`BenchError` when building fails.
    """
    root = WORK / f"{name}-venv"
    python = venv_python(name)
    wanted = "\n".join(requirements) + "\n"
    stamp = root / _STAMP
    if python.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return python
    if not create:
        return None
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    echo(f"building the {name} environment in {root} ({', '.join(requirements)}), once")
    started = time.monotonic()
    steps = [
        [sys.executable, "-m", "venv", str(root)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *requirements],
    ]
    for cmd in steps:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise BenchError(f"building the {name} environment took over {timeout:.0f}s") from exc
        if done.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise BenchError(f"building the {name} environment failed: {tail}")
    stamp.write_text(wanted)
    echo(f"{name} environment ready in {time.monotonic() - started:.0f}s")
    return python
