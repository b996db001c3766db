"""The click options several commands share, and the one way a command loads its settings.

A command that talks to Kafka takes ``--bootstrap-servers`` and ``--prefix`` through
:func:`connection_options` and turns them into :class:`~clients.RunfoldSettings` with
:func:`connected_settings`; the settings (``RUNFOLD_*``, ``$RUNFOLD_CONFIG``) fill in the rest.
It first checks, within seconds, that the cluster answers and lets it in, so an unreachable
broker or bad credentials end the command with one sentence (:mod:`clients.connection`)
instead of librdkafka retrying behind a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from clients import RunfoldSettings
from clients.connection import check_connection
from schemas.codec import configure_registry

__all__ = [
    "bootstrap_servers_option",
    "connected_settings",
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
    settings = RunfoldSettings.load(**overrides)
    if settings.schema_registry_url:
        # Confluent-framed records name their writer schema by registry id: every
        # command that reads them (consume, runs, top, export, serve) looks it up there.
        configure_registry(settings.schema_registry_url)
    return settings


def connected_settings(
    bootstrap_servers: str | None = None,
    prefix: str | None = None,
    *,
    timeout: float | None = None,
) -> RunfoldSettings:
    """:func:`load_settings`, once the cluster they name has answered and let us in.

    Raises :class:`~schemas.errors.KafkaSetupError` within about ``timeout`` seconds (default:
    the ``connect_timeout`` setting) naming the address tried and what to do, or the user and
    mechanism the broker refused.
    """
    settings = load_settings(bootstrap_servers, prefix)
    wait = timeout if timeout is not None else settings.connect_timeout
    check_connection(settings.admin_config(), timeout=wait)
    return settings
