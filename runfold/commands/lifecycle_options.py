"""``runfold consume``'s options for the run lifecycle and the bounds of the service's state.

Each option's value goes to the :class:`~consumers.service.config.ServiceConfig` field of
the same name, which validates it (a bad combination, such as a retention shorter than
the grace, ends the command with the config's sentence). docs/operations.md, "Run
lifecycle and bounds", says what happens at each bound.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import click

from consumers.service.config import ServiceConfig

__all__ = ["LIFECYCLE_FIELDS", "Duration", "lifecycle_options"]

F = TypeVar("F", bound=Callable[..., Any])

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\A\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)?\s*\Z")


class Duration(click.ParamType[float, Any]):
    """A duration: a number of seconds, or with a unit (``500ms``, ``30s``, ``5m``, ``2h``,
    ``7d``); in seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        match = _DURATION.match(str(value))
        if match is None or float(match["number"]) <= 0:
            self.fail(
                f"{value!r} is not a positive duration (e.g. 300, 30s, 5m, 2h, 7d)", param, ctx
            )
        return float(match["number"]) * _UNITS[match["unit"] or "s"]


class _Setting(NamedTuple):
    """One option: its flag, the ServiceConfig field it sets (whose default it shows), how
    its value is parsed, and its help."""

    flag: str
    field: str
    parse: click.ParamType[Any, Any]
    help: str


_SETTINGS = (
    _Setting(
        "--finished-grace",
        "finished_grace_s",
        Duration(),
        "Event time a finished run stays whole (to judge late duplicates and conflicts) "
        "before it shrinks to a small marker.",
    ),
    _Setting(
        "--finished-retention",
        "finished_retention_s",
        Duration(),
        "Event time a finished run's marker is kept; then it is forgotten (a tombstone) "
        "and an older event of it is a forgotten_run violation.",
    ),
    _Setting(
        "--max-clock-skew",
        "max_clock_skew_s",
        Duration(),
        "How far past the wall clock an event's time may move its partition's clock "
        "(reorder bound, grace, retention); an event stamped later still folds.",
    ),
    _Setting(
        "--max-markers",
        "max_markers",
        click.IntRange(min=1),
        "Markers of finished runs held (~55 bytes each); the oldest are shed first.",
    ),
    _Setting(
        "--max-active-runs",
        "max_active_runs",
        click.IntRange(min=1),
        "Runs held decoded (~1.7 KiB for a short run); the least recently changed running "
        "runs over it are paged out to packed bytes, never dropped.",
    ),
    _Setting(
        "--page-idle-after",
        "page_idle_after_s",
        Duration(),
        "Wall time a running run may go without an event before it is paged out to packed "
        "bytes (~0.3 KiB for a short run against ~1.7 KiB decoded) until its next event.",
    ),
    _Setting(
        "--max-buffered-events",
        "max_buffered_events",
        click.IntRange(min=1),
        "Events held in all reorder buffers; over it the oldest buffers give up waiting "
        "(gap violations).",
    ),
    _Setting(
        "--max-run-bytes",
        "max_run_bytes",
        click.IntRange(min=4096),
        "Largest run state written; a larger one is shrunk before it commits "
        "[default: the state topic's max.message.bytes].",
    ),
    _Setting(
        "--runs-tombstones/--no-runs-tombstones",
        "runs_tombstones",
        click.BOOL,
        "Also delete a forgotten run's agent-runs record (a tombstone) after the retention.",
    ),
)

LIFECYCLE_FIELDS = tuple(setting.field for setting in _SETTINGS)
"""The ServiceConfig fields these options set (the names ``consume`` receives)."""


def _shown(seconds: float) -> str:
    """A default duration as the help shows it: in its largest whole unit (``5m``, ``7d``)."""
    for unit in ("d", "h", "m", "s"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]:g}{unit}"
    return f"{seconds:g}"


def lifecycle_options(command: F) -> F:
    """Add the lifecycle and bounds options to ``command``, in the order of the table."""
    defaults = ServiceConfig(kafka={})
    for setting in reversed(_SETTINGS):
        default = getattr(defaults, setting.field)
        command = click.option(
            setting.flag,
            setting.field,
            type=setting.parse,
            default=default,
            show_default=_shown(default) if isinstance(setting.parse, Duration) else True,
            help=setting.help,
        )(command)
    return command
