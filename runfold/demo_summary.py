"""The end of ``runfold demo``: what it observed next to the simulator's manifest.

:class:`DemoSummary` holds both sides; :func:`check` names every disagreement;
:func:`render_summary` and :func:`next_steps` are what a person reads.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

__all__ = ["KINDS", "STATUSES", "DemoSummary", "check", "next_steps", "render_summary"]

STATUSES = ("RUNNING", "COMPLETED", "FAILED", "CANCELLED")
"""Run statuses, in the order the summary lists them."""
KINDS = ("gap", "duplicate", "conflict", "after_terminal", "missing_start")
"""Violation kinds, in the order the summary lists them."""
_STATUSES, _KINDS = STATUSES, KINDS


@dataclass
class DemoSummary:
    """What the demo observed next to what the simulator says must happen."""

    bootstrap: str
    topics: dict[str, str]
    seed: int
    runs: int
    agents: int
    faults: str
    records_produced: int
    produce_seconds: float
    fold_seconds: float
    consumer: dict[str, Any]
    runs_by_status: dict[str, int]
    expected_runs_by_status: dict[str, int]
    violations: dict[str, int]
    expected_violations: dict[str, int]
    example_runs: dict[str, str]
    dlq: int
    expected_dlq: int
    events_applied: int
    expected_events_applied: int
    broker: str = "external"
    """``external`` (configured), ``local`` (already running) or ``started`` (by the demo)."""
    broker_stopped: bool = False
    leftover_records: int = 0
    """Records earlier runs left unfolded in the events topic; folded first, not counted."""
    earlier_dlq: int = 0
    """Dead letters written meanwhile for those earlier records; not counted in ``dlq``."""
    mismatches: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def check(summary: DemoSummary) -> list[str]:
    """Where the output topics disagree with the manifest."""
    problems = []
    for label, seen, wanted in (
        ("runs by status", summary.runs_by_status, summary.expected_runs_by_status),
        ("violations", summary.violations, summary.expected_violations),
        ("dead letters", summary.dlq, summary.expected_dlq),
        ("events applied", summary.events_applied, summary.expected_events_applied),
    ):
        if seen != wanted:
            problems.append(f"{label}: folded {seen}, manifest {wanted}")
    return problems


def render_summary(summary: DemoSummary, *, rate_limited: bool = True) -> RenderableType:
    """The summary for people: numbers next to the manifest's, and what to try next."""
    def mark(seen: int, wanted: int) -> Text:
        return Text(f"{seen:,}", style="green" if seen == wanted else "bold red")

    runs = Table(title="runs by status", title_justify="left")
    for column in ("status", "folded", "expected"):
        runs.add_column(column, justify="left" if column == "status" else "right")
    for status in _STATUSES:
        seen, wanted = summary.runs_by_status[status], summary.expected_runs_by_status[status]
        runs.add_row(status, mark(seen, wanted), f"{wanted:,}")
    violations = Table(title="violations", title_justify="left")
    for column in ("kind", "folded", "expected", "example run"):
        right = column in ("folded", "expected")
        violations.add_column(column, justify="right" if right else "left")
    for kind in _KINDS:
        seen = summary.violations.get(kind, 0)
        wanted = summary.expected_violations.get(kind, 0)
        if seen or wanted:
            violations.add_row(kind, mark(seen, wanted), f"{wanted:,}",
                               summary.example_runs.get(kind, "—"))
    consumer = summary.consumer
    produce_rate = summary.records_produced / max(summary.produce_seconds, 1e-9)
    fold_rate = consumer["consumed"] / max(summary.fold_seconds, 1e-9)
    facts = Text.assemble(
        (f"{summary.records_produced:,}", "bold"), " records produced in "
        f"{summary.produce_seconds:.1f}s ({produce_rate:,.0f}/s",
        ", rate-limited for the show" if rate_limited else "", "); ",
        (f"{consumer['consumed']:,}", "bold"), " folded in "
        f"{summary.fold_seconds:.1f}s ({fold_rate:,.0f}/s) in ",
        f"{consumer['transactions']:,} transactions: applied ",
        mark(summary.events_applied, summary.expected_events_applied),
        f", duplicates {consumer['duplicate']:,}, rejected {consumer['violation']:,}, "
        f"reordered and released {consumer['released']:,}, dead letters ",
        mark(summary.dlq, summary.expected_dlq), f" (expected {summary.expected_dlq})",
    )
    if summary.leftover_records or summary.earlier_dlq:
        facts.append(
            f"; the folded count includes {summary.leftover_records:,} records an earlier "
            f"run left unfolded ({summary.earlier_dlq:,} of them dead letters), which the "
            "comparison leaves out", style="dim")
    verdict = (
        Text("✓ every number matches the simulator's manifest", style="bold green")
        if not summary.mismatches
        else Text("✗ " + "; ".join(summary.mismatches), style="bold red")
    )
    return Group(Text(""), verdict, runs, violations, facts, Text(""))


def next_steps(summary: DemoSummary, prefix: str | None = None) -> list[str]:
    """Commands to try after the demo, ready to paste."""
    example = next(iter(summary.example_runs.values()), None)
    prefix = f" --prefix {prefix}" if prefix else ""
    hints = [f"runfold runs show {example}{prefix}", f"runfold runs replay {example}{prefix}"] \
        if example else []
    hints += [
        f"runfold sql{prefix} \"SELECT status, count(*) FROM runs GROUP BY 1\"",
        f"runfold sql{prefix} \"SELECT kind, count(*) FROM violations GROUP BY 1\"",
        f"runfold export{prefix} --format parquet --out runs-export/",
        f"runfold top{prefix}",
    ]
    if summary.broker == "started" and summary.broker_stopped:
        hints.insert(0, "runfold kafka up   # the demo stopped its broker; this starts it again")
    elif summary.broker in ("started", "local"):
        hints.append("runfold kafka down   # stop the local broker when done")
    runner = ".venv/bin/" if Path(".venv/bin/runfold").exists() else ""
    return [runner + hint for hint in hints]
