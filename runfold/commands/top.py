"""``runfold top``: a live terminal view of the fleet, refreshed from the topics.

Works against any cluster the settings reach (``RUNFOLD_*``, ``$RUNFOLD_CONFIG``,
``--bootstrap-servers``); it only reads (``read_committed``, no group membership, no
commits). ``--once`` prints a single frame and exits, for scripts and screenshots.
"""

from __future__ import annotations

import time

import click

from runfold.commands.options import connected_settings, connection_options, group_option

__all__ = ["top"]


@click.command()
@group_option("The folding consumer group whose lag is shown.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True,
              help="Read the topics to their end, sample the rates over one interval, "
                   "print one frame and exit.")
@click.option("--width", type=click.IntRange(min=60), default=None,
              help="Render this many columns wide (default: the terminal's width).")
@click.option("--timeout", type=click.FloatRange(min=0.5), default=None,
              help="Seconds to wait for the cluster's first answer "
                   "[default: the connect_timeout setting, 10].")
@connection_options
def top(group: str, interval: float, once: bool, width: int | None, timeout: float | None,
        bootstrap_servers: str | None, prefix: str | None) -> None:
    """Live view: runs by status, events/s, lag per partition, violations, slow/failing runs."""
    from rich.console import Console
    from rich.live import Live

    from runfold.live import FleetReader, render_snapshot

    settings = connected_settings(bootstrap_servers, prefix, timeout=timeout)
    console = Console(width=width)
    with FleetReader(settings, group, timeout=timeout or settings.connect_timeout) as reader:
        if once:
            reader.refresh(budget=30.0, until_caught_up=True)
            time.sleep(interval)
            console.print(render_snapshot(reader.refresh(budget=5.0, until_caught_up=True)))
            return
        snapshot = reader.refresh(budget=10.0, until_caught_up=True)
        with Live(render_snapshot(snapshot), console=console, screen=False,
                  auto_refresh=False) as live:
            try:
                while True:
                    started = time.monotonic()
                    snapshot = reader.refresh(budget=interval / 2)
                    live.update(render_snapshot(snapshot), refresh=True)
                    time.sleep(max(0.0, interval - (time.monotonic() - started)))
            except KeyboardInterrupt:
                pass
