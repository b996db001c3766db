"""``runfold produce``: send a simulated agent fleet to the events topic.

Example::

    runfold produce --runs 10000 --agents 16 --faults gap=0.01,dup=0.01 --manifest m.json

The fleet is deterministic (``--seed``); ``--manifest`` writes the ground truth the
consumer must reproduce (see :mod:`producers.fleet`). Exit status 1 when any record
was not delivered (failed, indeterminate or still pending after the flush).
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from producers import EventProducer, FaultRates, FaultSpecError, Fleet, FleetConfig, produce_fleet
from producers.kafka import DeliveryReport
from runfold.commands.options import connected_settings, metrics_port_option

__all__ = ["produce"]


def _faults(ctx: click.Context, param: click.Parameter, value: str | None) -> FaultRates:
    try:
        return FaultRates.parse(value)
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


@click.command()
@click.option("--runs", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Runs to simulate.")
@click.option("--agents", type=click.IntRange(min=1), default=8, show_default=True,
              help="Agents running in parallel (their runs interleave in the stream).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Cap on records per second (default: as fast as the broker takes them).")
@click.option("--faults", callback=_faults, default="", metavar="NAME=P,...",
              help="Per-run fault probabilities: gap, dup, reorder, after_end, conflict, "
                   "corrupt (e.g. gap=0.01,dup=0.02).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Same seed, same records, byte for byte.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the expected outcome (runs, violations, DLQ count) as JSON here.")
@click.option("--bootstrap", "--bootstrap-servers", "bootstrap", default=None, metavar="HOST:PORT",
              help="Kafka bootstrap servers (default: settings / the local broker).")
@click.option("--topic", default=None, help="Events topic (default: the settings' events topic).")
@click.option("--ensure-topics/--no-ensure-topics", default=True, show_default=True,
              help="Create runfold's topics first if they are missing.")
@metrics_port_option
def produce(runs: int, agents: int, rate: float | None, faults: FaultRates, seed: int,
            manifest: Path | None, bootstrap: str | None, topic: str | None,
            ensure_topics: bool, metrics_port: int | None) -> None:
    """Send a simulated fleet of agent runs (with optional faults) to Kafka."""
    # Bounded first contact: bad credentials fail in one line naming the cause.
    settings = connected_settings(bootstrap)
    names = settings.topic_names
    if topic:
        names = names.model_copy(update={"events": topic})
    if ensure_topics:
        from runfold.topics import ensure_topics as create_missing

        create_missing(settings.admin_config(), names, timeout=10.0)
    console = Console(stderr=True)
    producer = EventProducer(names.events, settings=settings)
    # The fleet writes the producer's framing (Confluent when a registry is configured).
    fleet = Fleet(
        FleetConfig(runs=runs, agents=agents, seed=seed, faults=faults), framing=producer.framing
    )
    producer.connect()
    if metrics_port is not None:
        from runfold.metrics import start_producer_metrics

        bound, _ = start_producer_metrics(producer, metrics_port)
        console.print(f"metrics: http://127.0.0.1:{bound}/metrics")
    with Progress(
        TextColumn("[bold]producing"), BarColumn(), MofNCompleteColumn(),
        TextColumn("runs · {task.fields[records]:,} records"), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console, transient=False,
    ) as progress:
        task = progress.add_task("produce", total=runs, records=0)

        def advance(records: int) -> None:
            progress.update(task, completed=fleet.runs_finished, records=records)

        started = time.monotonic()
        result = produce_fleet(fleet, producer, rate=rate, on_record=advance,
                               manifest_path=manifest)
    seconds = time.monotonic() - started
    report: DeliveryReport = result.report
    click.echo(f"topic={names.events} runs={runs} agents={agents} seed={seed} "
               f"faults={faults.as_text() or 'none'}")
    click.echo(f"delivery: {report.summary()}")
    click.echo(f"rate: {result.records / seconds if seconds else 0:,.0f} events/s "
               f"({result.records:,} records in {seconds:.2f}s, flush included)")
    if manifest is not None:
        totals = fleet.manifest()["totals"]
        click.echo(f"manifest: {manifest} (violations={totals.get('violations', 0)}, "
                   f"dlq={totals.get('dlq', 0)}, duplicates={totals.get('duplicates', 0)})")
    if not report.ok:
        raise click.ClickException(
            f"{report.produced - report.delivered} of {report.produced} records were not "
            "delivered; see the delivery line above"
        )
