"""``runfold topics create``: the DESIGN §3 topics with the right partitions and configs."""

from __future__ import annotations

import click

from clients.settings import RunfoldSettings
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
@click.option(
    "--prefix", default=None, help="Prefix for every topic name (e.g. per test or tenant)."
)
@click.option(
    "--bootstrap-servers",
    default=None,
    help="Kafka to use [default: settings, else the cluster `runfold kafka up` started].",
)
def create(
    partitions: int, replication: int | None, prefix: str | None, bootstrap_servers: str | None
) -> None:
    """Create agent-run-events, agent-runs (compacted), -violations and -events-dlq; idempotent."""
    overrides: dict[str, str] = {}
    if bootstrap_servers:
        overrides["bootstrap_servers"] = bootstrap_servers
    if prefix is not None:
        overrides["topic_prefix"] = prefix
    settings = RunfoldSettings.load(**overrides)
    report = ensure_topics(settings.admin_config(), settings.topic_names, partitions, replication)
    for name in report.created:
        click.echo(f"created {name}")
    for name in report.existing:
        click.echo(f"exists  {name}")
    for problem in report.mismatches:
        click.echo(f"MISMATCH {problem} (delete and recreate it to change)", err=True)
    if not report.ok:
        raise click.exceptions.Exit(1)
