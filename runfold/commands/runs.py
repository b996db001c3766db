"""``runfold runs list|show|replay``: look at folded runs and at the events behind them.

Rich tables for people, ``--json`` for programs (one JSON document on stdout).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import click

from runfold.commands.options import connected_settings, connection_options

__all__ = ["runs", "run_document"]

F = TypeVar("F", bound=Callable[..., Any])


def run_document(view: Any) -> dict[str, Any]:
    """A folded run (a :class:`consumers.run_view.RunView` of its ``agent-runs`` record) as
    JSON: the ``Run`` in serde JSON, counters, violations, what waits in its buffer."""
    state = view.state
    return {
        "run": json.loads(state.run.to_json()),
        "last_seq": state.last_seq,
        "pending": view.pending,
        "oldest_pending_at": view.oldest_pending_at,
        "stalled_since": state.stalled_since,
        "counters": state.counters(),
        "violation_counts": {k.value: n for k, n in state.violation_counts.items() if n},
        "violations": [json.loads(v.to_json()) for v in state.violations],
    }


def _run_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The run id in its canonical text (the record key), or a usage error before any search."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a run id: run ids are UUIDs such as "
            "3f2a9c1e-7b4d-4e8a-9c0f-5d6e7f8a9b0c (see `runfold runs list`)",
            ctx=ctx, param=param,
        ) from None


def _one_run(fn: F) -> F:
    """RUN_ID (a UUID), ``--json`` and the connection options of ``show`` and ``replay``."""
    fn = connection_options(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")(fn)
    return click.argument("run_id", callback=_run_id)(fn)


@click.group()
def runs() -> None:
    """Query folded runs (agent-runs) and replay their events (agent-run-events)."""


@runs.command("list")
@click.option(
    "--status",
    type=click.Choice(["RUNNING", "COMPLETED", "FAILED", "CANCELLED"], case_sensitive=False),
    default=None,
    help="Only runs with this status.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout.")
@connection_options
def list_command(
    status: str | None, as_json: bool, bootstrap_servers: str | None, prefix: str | None
) -> None:
    """The latest state of every run."""
    from consumers.service.edge import FoldEdge
    from consumers.service.queries import list_runs
    from schemas import RunStatus

    settings = connected_settings(bootstrap_servers, prefix)
    edge = FoldEdge.default()
    wanted = RunStatus(status.upper()) if status else None
    views = list_runs(
        settings.client_config(), settings.topic_names.runs, edge.read_run, status=wanted
    )
    if as_json:
        click.echo(json.dumps([run_document(v) for v in views]))
        return
    states = [v.state for v in views]
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(states)} runs in {settings.topic_names.runs}")
    for column in ("run_id", "status", "started_at", "finished_at", "events", "violations"):
        table.add_column(column)
    for s in states:
        table.add_row(
            str(s.run_id),
            s.status.value,
            s.started_at.isoformat(),
            s.finished_at.isoformat() if s.finished_at is not None else "",
            str(s.events_applied),
            str(sum(s.violation_counts.values())),
        )
    Console().print(table)


@runs.command("show")
@_one_run
def show_command(
    run_id: str, as_json: bool, bootstrap_servers: str | None, prefix: str | None
) -> None:
    """One run: its Run (serde JSON), counters and violations."""
    from consumers.service.edge import FoldEdge
    from consumers.service.queries import find_run

    settings = connected_settings(bootstrap_servers, prefix)
    edge = FoldEdge.default()
    view = find_run(settings.client_config(), settings.topic_names.runs, run_id, edge.read_run)
    doc = run_document(view)
    if as_json:
        click.echo(json.dumps(doc))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print_json(data=doc["run"])
    table = Table(title="counters")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name, value in doc["counters"].items():
        table.add_row(name, str(value))
    table.add_row("last_seq", str(doc["last_seq"]))
    console.print(table)
    if doc["violations"]:
        vt = Table(title="violations")
        for column in ("kind", "first_seq", "last_seq", "message"):
            vt.add_column(column)
        for v in doc["violations"]:
            vt.add_row(v["kind"], str(v["first_seq"]), str(v["last_seq"]), v["message"])
        console.print(vt)


@runs.command("replay")
@_one_run
def replay_command(
    run_id: str, as_json: bool, bootstrap_servers: str | None, prefix: str | None
) -> None:
    """A run's events from its partition: a timeline, and its replay digest."""
    from consumers.service.edge import FoldEdge
    from consumers.service.queries import replay_run

    settings = connected_settings(bootstrap_servers, prefix)
    replayed = replay_run(
        settings.client_config(), settings.topic_names.events, run_id, FoldEdge.default()
    )
    if as_json:
        click.echo(
            json.dumps(
                {
                    "run_id": replayed.run_id,
                    "partition": replayed.partition,
                    "digest": replayed.digest,
                    "applied": len(replayed.applied),
                    "timeline": [
                        {
                            "offset": e.offset,
                            "seq": e.event.seq if e.event else None,
                            "type": e.event.kind.type if e.event else None,
                            "timestamp": e.event.timestamp.isoformat() if e.event else None,
                            "outcome": e.outcome,
                            "violations": list(e.violations),
                        }
                        for e in replayed.timeline
                    ],
                }
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {run_id} (partition {replayed.partition})")
    for column in ("offset", "seq", "timestamp", "kind", "outcome", "violations"):
        table.add_column(column)
    for e in replayed.timeline:
        table.add_row(
            str(e.offset),
            str(e.event.seq) if e.event else "",
            e.event.timestamp.isoformat() if e.event else "",
            e.event.kind.type if e.event else "(undecodable)",
            e.outcome,
            "; ".join(e.violations),
        )
    console = Console()
    console.print(table)
    console.print(f"replay digest ({len(replayed.applied)} events applied): {replayed.digest}")
