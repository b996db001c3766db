"""A real Apache Kafka (KRaft) cluster run from Maven Central jars with the machine's Java.

``LocalKafka(home).up(nodes=1)`` formats storage (first time), starts 1 or 3 combined
broker+controller JVMs on loopback, waits until an admin client sees every broker and returns
the bootstrap string; ``down()`` stops exactly the pids it recorded. Files::

    <home>/kafka/cluster.json           what was started (see state.py)
    <home>/kafka/node-<id>/server.properties
    <home>/kafka/node-<id>/data/        KRaft metadata + topic logs (kept across down/up)
    <home>/kafka/node-<id>/logs/        server.log (log4j2) and stdout.log
"""

from __future__ import annotations

import base64
import contextlib
import logging
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.cluster_state import ClusterState, NodeState, default_home, read_state, write_state
from runfold.kafka import process, scram
from runfold.kafka.jars import KAFKA_VERSION, RESOURCES, find_java, kafka_lib
from schemas.errors import KafkaSetupError

__all__ = ["DEFAULT_PORT", "LocalKafka", "NodeStatus"]

DEFAULT_PORT = 9092
JVM_OPTS = [
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
]
# Few internal partitions: each is created on the first group/transaction, which is what a
# test waits for; a laptop cluster needs no more.
_INTERNAL_PARTITIONS = 4

Echo = Callable[[str], None]


@dataclass(frozen=True)
class NodeStatus:
    """What ``kafka status`` shows for one node."""

    node_id: int
    pid: int | None
    alive: bool
    broker_port: int
    controller_port: int
    log: Path


class LocalKafka:
    """A local KRaft cluster under ``home`` (default: ``.runfold/`` of the project)."""

    def __init__(
        self,
        home: Path | str | None = None,
        *,
        kafka_version: str = KAFKA_VERSION,
        host: str = "127.0.0.1",
        cache: Path | None = None,
    ) -> None:
        self.home = Path(home).resolve() if home is not None else default_home()
        self.root = self.home / "kafka"
        self.kafka_version = kafka_version
        self.host = host
        self.cache = cache
        # Set by up(auth="scram"): the users created at format time (see scram.py).
        self._scram: scram.ScramCredentials | None = None

    # -- queries -------------------------------------------------------------------------

    def state(self) -> ClusterState | None:
        """The recorded cluster, if any."""
        return read_state(self.home)

    def status(self) -> list[NodeStatus]:
        """One entry per recorded node; empty when nothing was ever started here."""
        state = self.state()
        if state is None or state.backend != "jvm":
            return []
        return [
            NodeStatus(
                node_id=node.node_id,
                pid=node.pid,
                alive=node.pid is not None and process.is_ours(node.pid, self._marker(node)),
                broker_port=node.broker_port,
                controller_port=node.controller_port,
                log=self._node_dir(node.node_id) / "logs" / "server.log",
            )
            for node in state.nodes
        ]

    def is_running(self) -> bool:
        """True when every recorded node is alive."""
        nodes = self.status()
        return bool(nodes) and all(node.alive for node in nodes)

    @property
    def bootstrap(self) -> str | None:
        """The running cluster's bootstrap servers, or ``None``."""
        state = self.state()
        return state.bootstrap if state is not None and self.is_running() else None

    # -- up ------------------------------------------------------------------------------

    def up(
        self,
        nodes: int = 1,
        port: int | None = None,
        *,
        auth: str = "none",
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        ready_timeout: float = 120.0,
        tie_to_parent: bool = False,
        echo: Echo | None = None,
    ) -> str:
        """Start the cluster (or find it running) and return its bootstrap servers.

        ``port`` is the first broker port (brokers take ``port``, ``port+1``, ...); ``0`` picks
        free ports. ``tie_to_parent`` stops the brokers when the calling process dies (for
        test fixtures). ``auth="scram"`` puts the client listener behind SASL/SCRAM-SHA-512
        with user ``sasl_username`` (default ``runfold``) and ``sasl_password`` (default
        ``$RUNFOLD_SASL_PASSWORD``, else generated; see :mod:`runfold.kafka.scram`).
        Raises :class:`KafkaSetupError` with one actionable sentence.
        """
        say = echo or (lambda _msg: None)
        if nodes not in (1, 3):
            raise KafkaSetupError(f"--nodes must be 1 or 3, not {nodes}")
        if auth not in ("none", "scram"):
            raise KafkaSetupError(f"--auth must be none or scram, not {auth}")
        previous = self.state()
        formatted = any(d.is_dir() and any(d.iterdir()) for d in self.root.glob("node-*/data"))
        if formatted and previous is not None and previous.auth != auth:
            raise KafkaSetupError(
                f"the local cluster in {self.root} was formatted with --auth {previous.auth}, "
                f"not {auth}: `runfold kafka down --wipe` deletes it, or keep --auth "
                f"{previous.auth}"
            )
        self._scram = (
            scram.load_or_create(self.root, sasl_username, sasl_password, formatted=formatted)
            if auth == "scram"
            else None
        )
        if previous is not None and previous.backend == "jvm":
            statuses = self.status()
            if statuses and all(node.alive for node in statuses):
                return previous.bootstrap
            if any(node.alive for node in statuses):
                raise KafkaSetupError(
                    f"the local cluster in {self.root} is partly running; "
                    "run `runfold kafka down` and then `runfold kafka up` again"
                )
        java = find_java()
        lib = kafka_lib(self.kafka_version, cache=self.cache, echo=say)
        state = self._plan(previous, nodes, port)
        state.auth = auth
        write_state(self.home, state)
        self._format(java, lib, state)
        started: list[int] = []
        try:
            for node in state.nodes:
                node.pid = self._start(java, lib, node, tie_to_parent)
                started.append(node.pid)
                write_state(self.home, state)
            say(f"started {nodes} broker(s), waiting until ready (up to {ready_timeout:.0f}s)")
            self._wait_ready(state, ready_timeout)
        except BaseException:
            process.stop_pids(started, timeout=10.0)
            for node in state.nodes:
                node.pid = None
            write_state(self.home, state)
            raise
        return state.bootstrap

    def _plan(self, previous: ClusterState | None, nodes: int, port: int | None) -> ClusterState:
        """Choose ports and the cluster id, reusing existing data when its layout fits."""
        existing = sorted(self.root.glob("node-*/data"))
        existing = [d for d in existing if any(d.iterdir())]
        cluster_id: str | None = None
        if existing:
            if len(existing) != nodes:
                raise KafkaSetupError(
                    f"{self.root} holds data of a {len(existing)}-node cluster, not {nodes}: "
                    "`runfold kafka down --wipe` deletes it, or keep --nodes "
                    f"{len(existing)}"
                )
            ids = {self._meta(d).get("cluster.id") for d in existing}
            if len(ids) != 1:
                raise KafkaSetupError(
                    f"the data directories under {self.root} belong to different clusters: "
                    "`runfold kafka down --wipe` deletes them, then run up again"
                )
            cluster_id = ids.pop()
        if cluster_id is None:
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            # The storage tool rejects an id starting with "-"; the scripts avoid it too.
            cluster_id = "R" + cluster_id[1:] if cluster_id.startswith("-") else cluster_id

        taken: set[int] = set()
        first = DEFAULT_PORT if port is None else port
        broker_ports: list[int] = []
        for index in range(nodes):
            if first == 0:
                broker_ports.append(process.free_port(self.host, taken))
            else:
                wanted = first + index
                if not process.port_is_free(self.host, wanted):
                    raise KafkaSetupError(
                        f"port {wanted} on {self.host} is busy (another Kafka?): stop it, or "
                        f"choose free ports with `runfold kafka up --port N`"
                    )
                broker_ports.append(wanted)
            taken.add(broker_ports[-1])
        old_controllers = {
            n.node_id: n.controller_port for n in (previous.nodes if previous else [])
        }
        node_states = []
        for index, broker_port in enumerate(broker_ports):
            node_id = index + 1
            controller = old_controllers.get(node_id)
            if (
                controller is None
                or controller in taken
                or not process.port_is_free(self.host, controller)
            ):
                controller = process.free_port(self.host, taken)
            taken.add(controller)
            node_states.append(NodeState(node_id, broker_port, controller))
        return ClusterState(
            backend="jvm",
            kafka_version=self.kafka_version,
            cluster_id=cluster_id,
            host=self.host,
            nodes=node_states,
        )

    def _meta(self, data_dir: Path) -> dict[str, str]:
        """``meta.properties`` of a data dir; a missing or unreadable one means corruption."""
        meta = data_dir / "meta.properties"
        try:
            lines = meta.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise KafkaSetupError(
                f"{data_dir} is corrupt ({meta.name} unreadable): `runfold kafka down --wipe` "
                "deletes the local data, then run `runfold kafka up` again"
            ) from exc
        values = dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")
        if not values.get("cluster.id") or not values.get("node.id", "").isdigit():
            raise KafkaSetupError(
                f"{data_dir} is corrupt ({meta.name} lacks cluster.id/node.id): "
                "`runfold kafka down --wipe` deletes the local data, then run up again"
            )
        expected = data_dir.parent.name.removeprefix("node-")
        if values["node.id"] != expected:
            raise KafkaSetupError(
                f"{data_dir} is corrupt (it is node {values['node.id']}'s data, not node "
                f"{expected}'s): `runfold kafka down --wipe` deletes it, then run up again"
            )
        return values

    def _node_dir(self, node_id: int) -> Path:
        return self.root / f"node-{node_id}"

    def _marker(self, node: NodeState) -> str:
        return str(self._node_dir(node.node_id) / "server.properties")

    def _properties(self, state: ClusterState, node: NodeState) -> str:
        many = len(state.nodes) > 1
        rf, isr = (3, 2) if many else (1, 1)
        voters = ",".join(f"{n.node_id}@{self.host}:{n.controller_port}" for n in state.nodes)
        host = self.host
        lines = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{host}:{node.broker_port},"
            f"CONTROLLER://{host}:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{host}:{node.broker_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": self._node_dir(node.node_id) / "data",
            "num.partitions": 1,
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": _INTERNAL_PARTITIONS,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": _INTERNAL_PARTITIONS,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "share.coordinator.state.topic.num.partitions": 1,
            # A test's consumer should not wait 3 s for a rebalance nobody else joins.
            "group.initial.rebalance.delay.ms": 0,
            "num.network.threads": 2,
            "num.io.threads": 4,
        }
        if state.auth == "scram":
            if self._scram is None:
                raise KafkaSetupError("internal: SCRAM credentials were not loaded before start")
            lines.update(
                self._scram.broker_properties(host, node.broker_port, node.controller_port)
            )
        return "".join(f"{key}={value}\n" for key, value in lines.items())

    def _format(self, java: str, lib: Path, state: ClusterState) -> None:
        """Write each node's properties; format the storage of nodes that have none yet."""
        formats: list[tuple[NodeState, subprocess.Popen[str]]] = []
        for node in state.nodes:
            node_dir = self._node_dir(node.node_id)
            (node_dir / "logs").mkdir(parents=True, exist_ok=True)
            data = node_dir / "data"
            properties = node_dir / "server.properties"
            properties.write_text(self._properties(state, node))
            if state.auth == "scram":  # it holds the brokers' own password
                properties.chmod(0o600)
            if data.is_dir() and any(data.iterdir()):
                self._meta(data)  # raises when corrupt
                continue
            cmd = [
                java,
                "-Xmx256m",
                "-cp",
                f"{lib}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                state.cluster_id,
                "-c",
                str(node_dir / "server.properties"),
                *(self._scram.format_args() if self._scram is not None else []),
            ]
            formats.append(
                (
                    node,
                    subprocess.Popen(
                        cmd,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                        stdin=subprocess.DEVNULL,
                    ),
                )
            )
        for node, proc in formats:  # the nodes format in parallel: each is a JVM start
            output, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                last = [ln for ln in output.splitlines() if ln.strip()][-1:] or ["no output"]
                if self._scram is not None:  # the tool may echo its --add-scram arguments
                    for secret in (self._scram.password, self._scram.broker_password):
                        last[0] = last[0].replace(secret, "***")
                raise KafkaSetupError(
                    f"formatting node {node.node_id}'s storage failed: {last[0][:300]}; "
                    "`runfold kafka down --wipe` resets the local data"
                )

    def _start(self, java: str, lib: Path, node: NodeState, tie_to_parent: bool) -> int:
        node_dir = self._node_dir(node.node_id)
        logs = node_dir / "logs"
        cmd = [
            java,
            *JVM_OPTS,
            f"-Dlog4j2.configurationFile={RESOURCES / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={logs}",
            "-cp",
            f"{lib}/*",
            "kafka.Kafka",
            str(node_dir / "server.properties"),
        ]
        # Truncated per start, so a failure report reads only this start's errors (log4j2 copies
        # WARN and above there; server.log keeps the history).
        with open(logs / "stdout.log", "wb") as out:
            child = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own session: Ctrl-C in the terminal that ran `kafka up` does not reach it.
                start_new_session=True,
                preexec_fn=process.die_with_parent() if tie_to_parent else None,
                cwd=node_dir,
            )
        return child.pid

    def _wait_ready(self, state: ClusterState, timeout: float) -> None:
        """Poll until an admin client sees every broker; fail fast when a JVM dies."""
        from confluent_kafka.admin import AdminClient  # heavy import, only needed here

        deadline = time.monotonic() + timeout
        admin: AdminClient | None = None
        quiet = logging.getLogger("runfold.kafka.local.admin")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        while time.monotonic() < deadline:
            for node in state.nodes:
                assert node.pid is not None
                if not process.is_alive(node.pid):
                    self._raise_died(node)
            if admin is None and all(self._accepts(n.broker_port) for n in state.nodes):
                # librdkafka logs every refused connection; a null logger keeps `up` quiet.
                conf: dict[str, Any] = {"bootstrap.servers": state.bootstrap, "logger": quiet}
                if self._scram is not None:
                    conf.update(self._scram.client_config())
                admin = AdminClient(conf)
            if admin is not None:
                with contextlib.suppress(Exception):
                    meta = admin.list_topics(timeout=2)
                    if len(meta.brokers) == len(state.nodes):
                        return
            time.sleep(0.2)
        raise KafkaSetupError(
            f"the local broker did not become ready within {timeout:.0f}s; see "
            f"{self._node_dir(1) / 'logs' / 'server.log'}"
        )

    def _accepts(self, port: int) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((self.host, port)) == 0

    def _raise_died(self, node: NodeState) -> None:
        logs = self._node_dir(node.node_id) / "logs"
        first_error, advice = process.startup_failure([logs / "stdout.log"])
        detail = f" ({first_error})" if first_error else ""
        raise KafkaSetupError(
            f"broker node {node.node_id} exited during start-up: {advice}{detail}; "
            f"log: {logs / 'server.log'}"
        )

    # -- down ----------------------------------------------------------------------------

    def down(self, *, wipe: bool = False, timeout: float = 20.0) -> list[int]:
        """Stop the recorded broker pids (only ours); ``wipe`` also deletes the data.

        Returns the pids that were running.
        """
        state = self.state()
        stopped: list[int] = []
        if state is not None and state.backend == "jvm":
            ours = [
                node.pid
                for node in state.nodes
                if node.pid is not None and process.is_ours(node.pid, self._marker(node))
            ]
            stopped = process.stop_pids(ours, timeout=timeout)
            for node in state.nodes:
                node.pid = None
            write_state(self.home, state)
        if wipe:
            for node_dir in self.root.glob("node-*"):
                shutil.rmtree(node_dir, ignore_errors=True)
            (self.root / "cluster.json").unlink(missing_ok=True)
        return stopped
