"""``runfold topics create``: the DESIGN §3 topics with the right partitions and configs."""

from __future__ import annotations

import click

from runfold.commands.options import connected_settings, connection_options
from runfold.topics import DEFAULT_PARTITIONS, ensure_topics

__all__ = ["topics"]


@click.group()
def topics() -> None:
    """Manage runfold's Kafka topics."""


@topics.command()
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=DEFAULT_PARTITIONS,
    show_default=True,
    help="Partitions of every topic (runs and events co-partitioned).",
)
@click.option(
    "--replication",
    type=click.IntRange(min=1),
    default=None,
    help="Replication factor [default: min(3, brokers)].",
)
@connection_options
def create(
    partitions: int, replication: int | None, prefix: str | None, bootstrap_servers: str | None
) -> None:
    """Create agent-run-events, agent-runs (compacted), -violations and -events-dlq; idempotent."""
    settings = connected_settings(bootstrap_servers, prefix)
    report = ensure_topics(settings.admin_config(), settings.topic_names, partitions, replication)
    for name in report.created:
        click.echo(f"created {name}")
    for name in report.existing:
        click.echo(f"exists  {name}")
    for problem in report.mismatches:
        click.echo(f"MISMATCH {problem} (delete and recreate it to change)", err=True)
    if not report.ok:
        raise click.exceptions.Exit(1)
