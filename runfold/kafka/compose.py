"""Kafka through Docker Compose, used instead of the JVM broker when a Docker daemon answers.

``docker-compose.yml`` (project root) runs the ``apache/kafka`` KRaft image and a Schema
Registry. Only the daemon's answer to a ping counts: a ``docker`` client without an engine
proves nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from clients.cluster_state import ClusterState, NodeState, read_state, write_state
from schemas.errors import KafkaSetupError

__all__ = ["COMPOSE_BOOTSTRAP", "ComposeKafka", "docker_available"]

COMPOSE_BOOTSTRAP = "127.0.0.1:9092"
_PROJECT = "runfold"


def docker_available() -> bool:
    """True when a Docker daemon answers a ping within 3 s (False without the docker package)."""
    try:
        import docker  # type: ignore[import-untyped]  # optional dependency

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no package, no socket, no permission: all mean "no Docker"
        return False


def find_compose_file() -> Path | None:
    """``docker-compose.yml`` in the cwd's project, else next to the runfold sources."""
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents, Path(__file__).resolve().parents[2]):
        candidate = folder / "docker-compose.yml"
        if candidate.is_file():
            return candidate
    return None


class ComposeKafka:
    """``docker compose up``/``down`` of the project's compose file, recorded under ``home``."""

    def __init__(self, home: Path, compose_file: Path) -> None:
        self.home = home
        self.compose_file = compose_file

    def _compose(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        docker = shutil.which("docker")
        if docker is None:
            raise KafkaSetupError("the `docker` command is missing: install Docker Compose v2")
        cmd = [docker, "compose", "-p", _PROJECT, "-f", str(self.compose_file), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise KafkaSetupError(f"`docker compose {' '.join(args)}` failed: {last[:300]}")
        return done

    def is_running(self) -> bool:
        """True when the compose project's kafka service runs."""
        state = read_state(self.home)
        if state is None or state.backend != "docker":
            return False
        done = self._compose("ps", "--status", "running", "--services")
        return "kafka" in done.stdout.split()

    def up(self, ready_timeout: float = 120.0) -> str:
        """Start the services (``--wait`` uses the healthchecks) and return the bootstrap."""
        self._compose("up", "-d", "--wait", timeout=ready_timeout + 300)
        write_state(
            self.home,
            ClusterState(
                backend="docker",
                kafka_version="image",
                cluster_id="compose",
                nodes=[NodeState(node_id=1, broker_port=9092, controller_port=9093)],
            ),
        )
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": COMPOSE_BOOTSTRAP})
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            try:
                admin.list_topics(timeout=2)
                return COMPOSE_BOOTSTRAP
            except Exception:
                time.sleep(0.5)
        raise KafkaSetupError(
            f"Kafka in Docker did not answer within {ready_timeout:.0f}s: "
            "see `docker compose logs kafka`"
        )

    def down(self, *, wipe: bool = False) -> None:
        """Stop the compose project (``wipe`` also removes its volumes)."""
        self._compose("down", *(["-v"] if wipe else []))
        (self.home / "kafka" / "cluster.json").unlink(missing_ok=True)
