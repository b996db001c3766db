"""Where a local cluster keeps its files, and the small JSON record of what runfold started.

``<home>/kafka/cluster.json`` records the backend, the cluster id, each node's ports and pid.
It is what ``kafka status``/``kafka down`` read, so they act only on processes runfold started.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["ClusterState", "NodeState", "default_home", "read_state", "write_state"]


def default_home() -> Path:
    """``$RUNFOLD_HOME``, else ``.runfold/`` in the project directory around the cwd.

    The project directory is the nearest ancestor of the cwd holding ``pyproject.toml`` or
    ``.git``; without one, the cwd itself.
    """
    explicit = os.environ.get("RUNFOLD_HOME")
    if explicit:
        return Path(explicit).expanduser().resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "pyproject.toml").is_file() or (folder / ".git").exists():
            return folder / ".runfold"
    return cwd / ".runfold"


@dataclass
class NodeState:
    """One broker+controller process of a local cluster."""

    node_id: int
    broker_port: int
    controller_port: int
    pid: int | None = None


@dataclass
class ClusterState:
    """What runfold started: backend (``jvm`` or ``docker``), layout and pids."""

    backend: str
    kafka_version: str
    cluster_id: str
    host: str = "127.0.0.1"
    auth: str = "none"
    nodes: list[NodeState] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        """Comma-separated ``host:port`` of every broker listener."""
        return ",".join(f"{self.host}:{node.broker_port}" for node in self.nodes)


def _state_file(home: Path) -> Path:
    return home / "kafka" / "cluster.json"


def read_state(home: Path) -> ClusterState | None:
    """The recorded cluster under ``home``, or ``None`` when there is none (or it is unreadable)."""
    try:
        raw = json.loads(_state_file(home).read_text())
        nodes = [NodeState(**node) for node in raw.pop("nodes")]
        return ClusterState(nodes=nodes, **raw)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def write_state(home: Path, state: ClusterState) -> None:
    """Record ``state`` atomically (a reader never sees half a file)."""
    path = _state_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(path)
