"""What a benchmark run produced: measurements, the ratios between them, the goals, the machine.

A :class:`Measurement` is one number (events/s, milliseconds, seconds, bytes) with what it
was measured on. A number that could not be taken, or whose check failed (a peer that did
not end in runfold's state), stays in the report with ``valid=False`` and the reason, so a
reader never mistakes a missing number for a slow one.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Goal", "Measurement", "Ratio", "Report", "machine_notes"]


@dataclass
class Measurement:
    """One measured number."""

    key: str
    """Stable identifier, e.g. ``runfold.fold.eos``: JSON consumers and ratios refer to it."""
    stage: str
    """The group it belongs to in the table (``client ceiling``, ``runfold``, ...)."""
    label: str
    value: float | None
    unit: str
    detail: str = ""
    """What it was measured on (events, sizes, settings)."""
    valid: bool = True
    note: str = ""
    """Why the number is missing or invalid, or a caveat."""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def missing(cls, key: str, stage: str, label: str, unit: str, note: str) -> Measurement:
        """A number that could not be taken, and why."""
        return cls(key, stage, label, None, unit, valid=False, note=note)

    @property
    def usable(self) -> bool:
        """True when there is a valid number."""
        return self.valid and self.value is not None


@dataclass(frozen=True)
class Ratio:
    """``numerator / denominator`` of two measurements, shown beside the numerator."""

    label: str
    numerator: str
    denominator: str


@dataclass(frozen=True)
class Goal:
    """A target from the issue, checked against the measurements."""

    text: str
    check: Callable[[dict[str, Measurement]], tuple[bool | None, str]]
    """``(met, what was measured)``; ``met`` is ``None`` when a number is missing."""


@dataclass
class Report:
    """Everything one ``runfold bench`` invocation measured."""

    measurements: list[Measurement] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    seconds: float = 0.0

    def add(self, measurement: Measurement) -> Measurement:
        """Record ``measurement`` (replacing one with the same key) and return it."""
        self.measurements = [m for m in self.measurements if m.key != measurement.key]
        self.measurements.append(measurement)
        return measurement

    def by_key(self) -> dict[str, Measurement]:
        """The measurements by key."""
        return {m.key: m for m in self.measurements}

    def ratio_value(self, ratio: Ratio) -> float | None:
        """The ratio's value, or ``None`` when either side is missing or invalid."""
        found = self.by_key()
        top, bottom = found.get(ratio.numerator), found.get(ratio.denominator)
        if top is None or bottom is None or not top.usable or not bottom.usable:
            return None
        assert top.value is not None and bottom.value is not None
        return top.value / bottom.value if bottom.value else None

    def goal_results(self) -> list[tuple[str, bool | None, str]]:
        """``(goal, met, measured)`` for every goal."""
        found = self.by_key()
        return [(goal.text, *goal.check(found)) for goal in self.goals]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the whole report."""
        return {
            "format": "runfold-bench/1",
            "started": self.started,
            "seconds": round(self.seconds, 1),
            "machine": self.machine,
            "options": self.options,
            "measurements": [asdict(m) for m in self.measurements],
            "ratios": [
                {**asdict(r), "value": self.ratio_value(r)} for r in self.ratios
            ],
            "goals": [
                {"goal": text, "met": met, "measured": measured}
                for text, met, measured in self.goal_results()
            ],
        }


def _first_line(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def _proc_field(path: str, name: str) -> str:
    """The value of the first ``name: value`` line of a /proc file ("" when absent)."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine_notes(java: str | None = None) -> dict[str, Any]:
    """What a reader needs to weigh the numbers: CPU, cores, memory, load, versions."""
    cpu = _proc_field("/proc/cpuinfo", "model name") or "unknown"
    total_kib = _proc_field("/proc/meminfo", "MemTotal")
    memory_gib = round(int(total_kib.split()[0]) / 1024 / 1024, 1) if total_kib else None
    import confluent_kafka

    client_version: Any = confluent_kafka.version()
    if isinstance(client_version, tuple):
        client_version = client_version[0]
    load1, load5, _ = os.getloadavg()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "load_average_at_start": f"{load1:.1f} (1 min), {load5:.1f} (5 min)",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "confluent_kafka": client_version,
        "librdkafka": confluent_kafka.libversion()[0],
        "java": _first_line([java, "-version"]) if java else "not used",
    }
