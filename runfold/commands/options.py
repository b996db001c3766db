"""The click options several commands share, and the one way a command loads its settings.

A command that talks to Kafka takes ``--bootstrap-servers`` and ``--prefix`` through
:func:`connection_options` and turns them into :class:`~clients.RunfoldSettings` with
:func:`load_settings`; the settings (``RUNFOLD_*``, ``$RUNFOLD_CONFIG``) fill in the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from clients import RunfoldSettings

__all__ = [
    "bootstrap_servers_option",
    "connection_options",
    "group_option",
    "load_settings",
    "metrics_port_option",
    "prefix_option",
]

F = TypeVar("F", bound=Callable[..., Any])

BOOTSTRAP_HELP = "Kafka to use [default: settings, else the cluster `runfold kafka up` started]."


def bootstrap_servers_option(help: str = BOOTSTRAP_HELP) -> Callable[[F], F]:
    """``--bootstrap-servers HOST:PORT[,...]``: overrides the settings' bootstrap servers."""
    return click.option("--bootstrap-servers", default=None, metavar="HOST:PORT", help=help)


PREFIX_HELP = "Prefix of every topic name (e.g. per test or tenant)."


def prefix_option(help: str = PREFIX_HELP) -> Callable[[F], F]:
    """``--prefix``: overrides the settings' topic prefix."""
    return click.option("--prefix", default=None, help=help)


def connection_options(fn: F) -> F:
    """``--bootstrap-servers`` and ``--prefix``, as :func:`load_settings` takes them."""
    return bootstrap_servers_option()(prefix_option()(fn))


def group_option(help: str) -> Callable[[F], F]:
    """``--group`` (default ``runfold``): the folding consumer group."""
    return click.option("--group", default="runfold", show_default=True, help=help)


def metrics_port_option(fn: F) -> F:
    """``--metrics-port``: serve Prometheus metrics on this port."""
    return click.option(
        "--metrics-port", type=click.IntRange(0, 65535), default=None,
        help="Serve Prometheus metrics on this port (0: any free port).",
    )(fn)


def load_settings(
    bootstrap_servers: str | None = None, prefix: str | None = None
) -> RunfoldSettings:
    """The settings, with the command line's ``--bootstrap-servers`` and ``--prefix`` on top."""
    overrides: dict[str, str] = {}
    if bootstrap_servers:
        overrides["bootstrap_servers"] = bootstrap_servers
    if prefix is not None:
        overrides["topic_prefix"] = prefix
    return RunfoldSettings.load(**overrides)
