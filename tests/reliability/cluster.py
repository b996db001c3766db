"""A 3-node local KRaft cluster whose nodes a scenario can kill -9, stop and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka.admin import AdminClient

from clients.cluster_state import ClusterState, read_state, write_state
from runfold.kafka.process import die_with_parent, is_alive


def leader_of(admin: AdminClient, topic: str, partition: int) -> int:
    """The broker id leading ``topic``'s ``partition`` now."""
    meta = admin.list_topics(topic, timeout=10)
    return int(meta.topics[topic].partitions[partition].leader)


def in_sync(admin: AdminClient, topic: str, partitions: Sequence[int], replicas: int) -> bool:
    """True when every partition has all ``replicas`` in its ISR."""
    meta = admin.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None:  # a leaderless cluster may not know it yet
        return False
    parts = meta.partitions
    return all(p in parts and len(parts[p].isrs) == replicas for p in partitions)


class Cluster:
    """A running ``LocalKafka(home).up(nodes=3)``: kill, stop and restart its nodes by id.

    A restarted node runs the very command line it had (read from ``/proc``), in its own
    directory, logging to its ``stdout.log``; its new pid is recorded in ``cluster.json``
    so that ``LocalKafka.down()`` still stops exactly the nodes that run.
    """

    def __init__(self, home: Path, bootstrap: str) -> None:
        self.home = home
        self.bootstrap = bootstrap
        self._argv: dict[int, list[str]] = {}
        for node in self._state().nodes:
            assert node.pid is not None
            raw = Path(f"/proc/{node.pid}/cmdline").read_bytes()
            self._argv[node.node_id] = [a.decode() for a in raw.split(b"\0") if a]

    def _state(self) -> ClusterState:
        state = read_state(self.home)
        assert state is not None, f"no cluster recorded in {self.home}"
        return state

    def pid(self, node_id: int) -> int | None:
        """The node's pid while it runs."""
        node = next(n for n in self._state().nodes if n.node_id == node_id)
        return node.pid if node.pid is not None and is_alive(node.pid) else None

    def signal(self, node_id: int, sig: int) -> None:
        """Send ``sig`` to the node (SIGKILL is reaped and recorded as stopped)."""
        pid = self.pid(node_id)
        assert pid is not None, f"node {node_id} is not running"
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            deadline = time.monotonic() + 30
            while is_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)

    def restart(self, node_id: int) -> int:
        """Start a killed node again with its original command line; returns the new pid."""
        assert self.pid(node_id) is None, f"node {node_id} still runs"
        node_dir = self.home / "kafka" / f"node-{node_id}"
        with open(node_dir / "logs" / "stdout.log", "ab") as out:
            child = subprocess.Popen(
                self._argv[node_id],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
                cwd=node_dir,
            )
        state = self._state()
        for node in state.nodes:
            if node.node_id == node_id:
                node.pid = child.pid
        write_state(self.home, state)
        return child.pid
