"""``runfold kafka up|status|down``: a local Kafka cluster for development, tests and the demo."""

from __future__ import annotations

import time
from pathlib import Path

import click

from clients.cluster_state import default_home, read_state
from runfold.kafka.compose import ComposeKafka, docker_available, find_compose_file
from runfold.kafka.local import LocalKafka
from schemas.errors import KafkaSetupError

__all__ = ["kafka"]


def _note(message: str) -> None:
    # Progress goes to stderr so that stdout's last line is always `bootstrap=...`.
    click.echo(message, err=True)


def _home(home: Path | None) -> Path:
    return home.resolve() if home is not None else default_home()


_HOME = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for data, logs and pids (default: $RUNFOLD_HOME or .runfold/ of the project).",
)


@click.group()
def kafka() -> None:
    """Run a local Apache Kafka (KRaft): Docker Compose if a daemon answers, else the JVM."""


@kafka.command()
@click.option(
    "--nodes",
    type=click.Choice(["1", "3"]),
    default="1",
    show_default=True,
    help="1 broker, or 3 combined broker+controller nodes (RF 3, min.insync 2).",
)
@click.option(
    "--auth",
    type=click.Choice(["none", "scram"]),
    default="none",
    show_default=True,
    help="Client authentication (scram: SASL/SCRAM-SHA-512 on the client listener; "
    "the password is $RUNFOLD_SASL_PASSWORD, else generated into <home>/kafka/sasl.password).",
)
@click.option(
    "--user",
    default=None,
    help="SASL user created with --auth scram (default: runfold).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="First broker port (default 9092; nodes take port, port+1, ...; 0 = any free).",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "jvm", "docker"]),
    default="auto",
    show_default=True,
    help="auto: Docker Compose when a Docker daemon answers.",
)
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds to wait for the broker(s) to be ready.",
)
@_HOME
def up(
    nodes: str,
    auth: str,
    user: str | None,
    port: int | None,
    backend: str,
    timeout: float,
    home: Path | None,
) -> None:
    """Start Kafka and print `bootstrap=HOST:PORT[,...]` as the last line."""
    root = _home(home)
    compose_file = find_compose_file()
    use_docker = backend == "docker" or (
        backend == "auto"
        and nodes == "1"
        and auth == "none"
        and port is None
        and compose_file is not None
        and docker_available()
    )
    started = time.monotonic()
    if use_docker:
        if compose_file is None:
            raise KafkaSetupError("docker-compose.yml not found: run from the project directory")
        compose = ComposeKafka(root, compose_file)
        if compose.is_running():
            _note("Kafka (docker compose) is already running")
            bootstrap = "127.0.0.1:9092"
        else:
            _note(f"starting Kafka with docker compose ({compose_file})")
            bootstrap = compose.up(ready_timeout=timeout)
            _note("schema registry: http://127.0.0.1:8081")
            _note(f"ready in {time.monotonic() - started:.1f}s")
    else:
        local = LocalKafka(root)
        if local.is_running():
            _note(
                f"Kafka is already running (pids {', '.join(str(s.pid) for s in local.status())})"
            )
        bootstrap_before = local.bootstrap
        bootstrap = local.up(
            nodes=int(nodes),
            port=port,
            auth=auth,
            sasl_username=user,
            ready_timeout=timeout,
            echo=_note,
        )
        if auth == "scram":
            # The user name only: the password stays in its 0600 file.
            user_name = (local.root / "sasl.user").read_text().strip()
            _note(
                f"sasl: SASL_PLAINTEXT SCRAM-SHA-512 user={user_name} "
                f"password in {local.root / 'sasl.password'} (mode 0600)"
            )
        if bootstrap_before is None:
            _note(f"ready in {time.monotonic() - started:.1f}s; logs in {local.root}/node-*/logs")
    click.echo(f"bootstrap={bootstrap}")


@kafka.command()
@_HOME
def status(home: Path | None) -> None:
    """Show the local cluster's nodes: pid, ports, alive."""
    root = _home(home)
    state = read_state(root)
    if state is None:
        click.echo(f"no local Kafka recorded in {root / 'kafka'}")
        return
    if state.backend == "docker":
        running = ComposeKafka(root, find_compose_file() or Path("docker-compose.yml")).is_running()
        click.echo(
            f"docker compose: {'running' if running else 'stopped'}  bootstrap={state.bootstrap}"
        )
        return
    nodes = LocalKafka(root).status()
    for node in nodes:
        click.echo(
            f"node {node.node_id}: {'alive' if node.alive else 'stopped'}  "
            f"pid={node.pid or '-'}  broker={state.host}:{node.broker_port}  "
            f"controller={state.host}:{node.controller_port}  log={node.log}"
        )
    running = bool(nodes) and all(node.alive for node in nodes)
    click.echo(f"{'running' if running else 'stopped'}  bootstrap={state.bootstrap}")


@kafka.command()
@click.option("--wipe", is_flag=True, help="Also delete the cluster's data.")
@click.option(
    "--timeout",
    type=float,
    default=20.0,
    show_default=True,
    help="Seconds to wait after SIGTERM before SIGKILL.",
)
@_HOME
def down(wipe: bool, timeout: float, home: Path | None) -> None:
    """Stop the brokers runfold started here (by recorded pid only), and the demo's web view."""
    root = _home(home)
    from runfold.demo_web import stop_web_view

    web = stop_web_view(root)
    if web is not None:
        click.echo(f"stopped the demo's web view (pid {web})")
    state = read_state(root)
    if state is not None and state.backend == "docker":
        ComposeKafka(root, find_compose_file() or Path("docker-compose.yml")).down(wipe=wipe)
        click.echo("stopped docker compose project")
        return
    stopped = LocalKafka(root).down(wipe=wipe, timeout=timeout)
    if stopped:
        click.echo(f"stopped pid(s) {', '.join(map(str, stopped))}")
    else:
        click.echo("no local Kafka was running")
    if wipe:
        click.echo(f"deleted data under {root / 'kafka'}")
