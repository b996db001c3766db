"""``runfold consume``: run one member of the folding consumer group.

Exit status: 0 after a clean stop (``--until-idle``, SIGINT/SIGTERM: the open
transaction is committed first); 3 when this instance was fenced by another one
with the same ``--instance-id`` (it committed nothing after that); 1 on any other
error.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from types import FrameType
from typing import Any

import click

from consumers.service.config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_STALL_AFTER_S,
    DEFAULT_TXN_INTERVAL_MS,
)
from runfold.commands.lifecycle_options import lifecycle_options
from runfold.commands.options import (
    connected_settings,
    connection_options,
    group_option,
    metrics_port_option,
)

__all__ = ["EXIT_FENCED", "consume"]

EXIT_FENCED = 3
"""Exit status of an instance that another instance fenced."""


@click.command()
@group_option("Consumer group id.")
@click.option(
    "--instance-id",
    default="0",
    show_default=True,
    help="This instance's id, unique within the group: transactional.id is "
    "runfold-<group>-<instance-id> and the static group membership uses it too. "
    "A restart with the same id fences the old process.",
)
@click.option(
    "--guarantee",
    type=click.Choice(["exactly-once", "at-least-once"]),
    default="exactly-once",
    show_default=True,
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Events per transaction before committing (consumed 1,000 at a time).",
)
@click.option(
    "--txn-interval-ms",
    type=click.IntRange(min=1),
    default=DEFAULT_TXN_INTERVAL_MS,
    show_default=True,
    help="Commit an open transaction at least this often.",
)
@click.option(
    "--until-idle",
    type=click.FloatRange(min=0),
    default=None,
    help="Exit cleanly after this many seconds without new records.",
)
@click.option(
    "--transaction-timeout-ms",
    type=click.IntRange(min=1000),
    default=15_000,
    show_default=True,
    help="Bounds how long a killed instance's open transaction blocks its successor.",
)
@click.option(
    "--session-timeout-ms",
    type=click.IntRange(min=1000),
    default=10_000,
    show_default=True,
)
@lifecycle_options
@click.option(
    "--stall-after",
    "stall_after_s",
    type=click.FloatRange(min=0, min_open=True, max=1e9),
    default=DEFAULT_STALL_AFTER_S,
    show_default=True,
    metavar="SECONDS",
    help="Flag a RUNNING run with no event for this long (wall clock) as stalled: one "
    "'stalled' violation and stalled_since in its agent-runs record, both cleared when "
    "an event comes. The wait restarts when the service restarts.",
)
@click.option(
    "--fail-stalled-runs",
    is_flag=True,
    help="End a stalled run as FAILED (its outputs say why) instead of only flagging it.",
)
@click.option(
    "--publish-duplicates",
    is_flag=True,
    help="Also publish a 'duplicate' violation for every dropped duplicate (by default "
    "duplicates are only counted: the run's duplicates and the duplicate outcome).",
)
@connection_options
@click.option("--stats-json", is_flag=True, help="Print the final counters as JSON on stdout.")
@click.option("-v", "--verbose", is_flag=True, help="Log every rebalance and restore.")
@metrics_port_option
def consume(
    group: str,
    instance_id: str,
    guarantee: str,
    batch_size: int,
    txn_interval_ms: int,
    until_idle: float | None,
    transaction_timeout_ms: int,
    session_timeout_ms: int,
    stall_after_s: float,
    fail_stalled_runs: bool,
    publish_duplicates: bool,
    bootstrap_servers: str | None,
    prefix: str | None,
    stats_json: bool,
    verbose: bool,
    metrics_port: int | None,
    **lifecycle: Any,
) -> None:
    """Fold agent-run-events into agent-runs, exactly once by default."""
    from consumers.service import FoldService, ServiceConfig, ServiceStopped
    from schemas.errors import ConfigError

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        # The lifecycle's settings are checked before any connection is tried.
        ServiceConfig(kafka={}, **lifecycle)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    # Bounded first contact: bad credentials fail here in one line instead of librdkafka
    # reconnecting and init_transactions being retried for minutes.
    settings = connected_settings(bootstrap_servers, prefix)
    config = ServiceConfig.on_topics(
        dict(settings.client_config()),
        settings.topic_names,
        group=group,
        instance_id=instance_id,
        guarantee="exactly-once" if guarantee == "exactly-once" else "at-least-once",
        batch_size=batch_size,
        txn_interval_ms=txn_interval_ms,
        until_idle=until_idle,
        transaction_timeout_ms=transaction_timeout_ms,
        session_timeout_ms=session_timeout_ms,
        stall_after_s=stall_after_s,
        fail_stalled_runs=fail_stalled_runs,
        publish_duplicates=publish_duplicates,
        **lifecycle,
    )
    service = FoldService(config)
    if metrics_port is not None:
        from runfold.metrics import start_service_metrics

        bound, _ = start_service_metrics(service, metrics_port)
        click.echo(f"metrics: http://127.0.0.1:{bound}/metrics", err=True)

    def _stop(signum: int, frame: FrameType | None) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    started = time.monotonic()
    try:
        stats = service.run()
    except ServiceStopped as exc:
        click.echo(f"runfold consume: {exc}", err=True)
        if stats_json:
            click.echo(json.dumps({"stopped": str(exc), "fenced": exc.fenced}))
        raise click.exceptions.Exit(EXIT_FENCED if exc.fenced else 1) from exc
    seconds = time.monotonic() - started
    if stats_json:
        click.echo(json.dumps({**stats.as_dict(), "seconds": round(seconds, 3)}))
    else:
        click.echo(
            f"consumed {stats.consumed} records in {seconds:.1f}s: applied {stats.applied}, "
            f"duplicate {stats.duplicate}, violation {stats.violation}, "
            f"buffered {stats.buffered}, dlq {stats.dlq}, replayed {stats.replayed}; "
            f"{stats.transactions} commits, {stats.aborts} aborts",
            err=True,
        )
