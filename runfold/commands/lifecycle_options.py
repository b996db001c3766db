"""``runfold consume``'s options for the run lifecycle and the bounds of the service's state.

Each option's value goes to the :class:`~consumers.service.config.ServiceConfig` field of
the same name, which validates it (a bad combination, such as a retention shorter than
the grace, ends the command with the config's sentence). docs/operations.md, "Run
lifecycle and bounds", says what happens at each bound.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from consumers.service.config import Lifecycle, ServiceConfig

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


LIFECYCLE_FIELDS = (
    "finished_grace_s",
    "finished_retention_s",
    "max_markers",
    "max_active_runs",
    "max_buffered_events",
    "max_run_bytes",
    "runs_tombstones",
)
"""The ServiceConfig fields these options set (the names ``consume`` receives)."""


def lifecycle_options(command: F) -> F:
    """Add the lifecycle and bounds options to ``command``."""
    defaults = ServiceConfig(kafka={})
    options = [
        click.option(
            "--finished-grace",
            "finished_grace_s",
            type=Duration(),
            default=defaults.finished_grace_s,
            show_default="5m",
            help="Event time a finished run stays whole (to judge late duplicates and "
            "conflicts) before it shrinks to a small marker.",
        ),
        click.option(
            "--finished-retention",
            "finished_retention_s",
            type=Duration(),
            default=defaults.finished_retention_s,
            show_default="7d",
            help="Event time a finished run's marker is kept; then it is forgotten (a "
            "tombstone) and an older event of it is a forgotten_run violation.",
        ),
        click.option(
            "--max-clock-skew",
            "max_clock_skew_s",
            type=Duration(),
            default=defaults.max_clock_skew_s,
            show_default="1h",
            help="How far past the wall clock an event's time may move its partition's "
            "clock (reorder bound, grace, retention); an event stamped later still folds.",
        ),
        click.option(
            "--max-markers",
            type=click.IntRange(min=1),
            default=defaults.max_markers,
            show_default=True,
            help="Markers of finished runs held (~55 bytes each); the oldest are shed first.",
        ),
        click.option(
            "--max-active-runs",
            type=click.IntRange(min=1),
            default=Lifecycle.max_active_runs,
            show_default=True,
            help="Runs held decoded (~2.5 KiB each); idle running runs over it are paged "
            "out to packed bytes (~0.9 KiB), never dropped.",
        ),
        click.option(
            "--max-buffered-events",
            type=click.IntRange(min=1),
            default=Lifecycle.max_buffered_events,
            show_default=True,
            help="Events held in all reorder buffers; over it the oldest buffers give up "
            "waiting (gap violations).",
        ),
        click.option(
            "--max-run-bytes",
            type=click.IntRange(min=4096),
            default=None,
            help="Largest run state written; a larger one is shrunk before it commits "
            "[default: the state topic's max.message.bytes].",
        ),
        click.option(
            "--runs-tombstones/--no-runs-tombstones",
            default=False,
            show_default=True,
            help="Also delete a forgotten run's agent-runs record (a tombstone) after the "
            "retention.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command
