"""Run a peer's fold over the pre-loaded events topic, time it, and check its final state.

The peer runs as a child process in its own environment. Its rate is measured as runfold's:
from its "first record" line to the moment its group's committed offsets reach
the end of the topic. Its final state is read back from what it committed to Kafka (its
changelog topic, read_committed) and compared with runfold's ground truth; a peer whose
state differs keeps its number, marked invalid, with the difference named.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from bench.kafka_env import (
    BenchError,
    Watched,
    committed_offsets,
    cpu_seconds,
    end_offsets,
    wait_committed,
)
from bench.peers.venvs import WORK, ensure_venv
from bench.results import Measurement
from bench.runfold_stages import FinalState, compare_states, per_cpu
from consumers.service.config import DEFAULT_BATCH_SIZE, DEFAULT_TXN_INTERVAL_MS
from consumers.service.restore import read_latest_by_key

__all__ = [
    "FAUST", "FAUST_REQUIREMENTS", "QUIX", "QUIX_OWN", "QUIX_REQUIREMENTS", "Peer", "run_peer",
]

# The peers commit on runfold's default cadence, so no one is measured with cheaper commits.
_CADENCE = ["--commit-every", str(DEFAULT_BATCH_SIZE),
            "--commit-interval", str(DEFAULT_TXN_INTERVAL_MS / 1000)]
_CADENCE_TEXT = f"commit every {DEFAULT_BATCH_SIZE:,} / {DEFAULT_TXN_INTERVAL_MS / 1000:g} s"

STAGE = "peers"
QUIX_REQUIREMENTS = ("quixstreams==3.28.1", "fastavro>=1.9")
# aiokafka reads lz4 (runfold's compression) through cramjam.
FAUST_REQUIREMENTS = ("faust-streaming==0.15.3", "fastavro>=1.9", "cramjam")
_PEERS = Path(__file__).resolve().parent
_EVENT_SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "avro" / "Event.v1.avsc"


def _changelog_state(bootstrap: str, topics: list[str], partitions: int) -> FinalState:
    """A peer's committed state from its changelog topics (read_committed, latest per key).

    Keys are JSON text: Quix writes ``"<run_id>"|"run"`` (message key, then state key),
    faust ``"<run_id>"``; values are the JSON state of :func:`peer_fold.fold_run`.
    """
    states: FinalState = {}
    for topic in topics:
        latest = read_latest_by_key(
            {"bootstrap.servers": bootstrap}, topic, list(range(partitions)), timeout=120
        )
        for part in latest.values():
            for key, value in part.latest.items():
                run_id = json.loads(key.split(b"|", 1)[0])
                run = json.loads(value)
                states[run_id] = (run["status"], run["last_seq"], run["events"])
    return states


@dataclass(frozen=True)
class Peer:
    """How to run one peer and where its committed state is."""

    key: str
    label: str
    venv: str
    requirements: tuple[str, ...]
    script: str
    detail: str
    stops_by_itself: bool
    """Quix stops when idle; faust runs until told to stop."""
    budget: float | None = None
    """Seconds the peer gets; past them its rate is taken from what it committed so far."""
    cadence: tuple[str, ...] = tuple(_CADENCE)
    """Its commit options: runfold's default cadence unless said otherwise."""

    def command(self, python: Path, bootstrap: str, topic: str, group: str,
                partitions: int, work: Path) -> list[str]:
        """The peer's command line."""
        cmd = [str(python), str(_PEERS / self.script), "--bootstrap", bootstrap,
               "--topic", topic, "--group", group, "--schema", str(_EVENT_SCHEMA), *self.cadence]
        if self.venv == "quix":
            return [*cmd, "--state-dir", str(work), "--idle", "2"]
        return [*cmd, "--partitions", str(partitions)]


QUIX = Peer(
    "peer.quix.eos", "Quix Streams 3.28 fold, exactly-once", "quix", QUIX_REQUIREMENTS,
    "quix_fold.py",
    f"fastavro decode, RocksDB state + changelog, {_CADENCE_TEXT}",
    stops_by_itself=True,
)
# Quix's own defaults (commit every 5 s, no count): what a user who did not tune it gets,
# for reference beside the same-cadence row the ratios use.
QUIX_OWN = Peer(
    "peer.quix.eos.own", "Quix Streams 3.28 fold, exactly-once, its default cadence", "quix",
    QUIX_REQUIREMENTS, "quix_fold.py",
    "fastavro decode, RocksDB state + changelog, Quix's defaults: commit every 5 s",
    stops_by_itself=True,
    cadence=("--commit-every", "0", "--commit-interval", "5"),
)
FAUST = Peer(
    "peer.faust.eos", "faust-streaming 0.15 fold, exactly_once", "faust", FAUST_REQUIREMENTS,
    "faust_fold.py",
    f"fastavro decode, in-memory Table + changelog, {_CADENCE_TEXT}",
    stops_by_itself=False,
    budget=90.0,
)


def _partial(peer: Peer, bootstrap: str, group: str, topic: str, partitions: int,
             total: int, started: float) -> Measurement:
    """The rate of a peer stopped at its budget, from the offsets it had committed."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = committed_offsets(consumer, topic, partitions)
    finally:
        consumer.close()
    seconds = time.monotonic() - started
    done = sum(max(0, offset) for offset in committed.values())
    return Measurement(
        peer.key, STAGE, peer.label, done / seconds, "ev/s",
        detail=f"{done:,} of {total:,} events committed in {seconds:.0f}s, {peer.detail}",
        valid=False,
        note=f"stopped at its {peer.budget:.0f} s budget: rate from committed progress, "
        "final state not checked",
    )


def run_peer(
    peer: Peer,
    bootstrap: str,
    events_topic: str,
    partitions: int,
    total: int,
    expected: FinalState,
    *,
    create_venv: bool,
    timeout: float,
    echo: Callable[[str], None],
    group: str,
) -> Measurement:
    """``peer`` doing the fold over ``events_topic``, timed and checked."""
    python = ensure_venv(peer.venv, peer.requirements, create=create_venv, echo=echo)
    if python is None:
        return Measurement.missing(
            peer.key, STAGE, peer.label, "ev/s",
            f"skipped: its environment bench/.work/{peer.venv}-venv is not built yet "
            "(--quick does not build it; a run without --quick, or --peers, does)",
        )
    work = WORK / f"{peer.venv}-state-{group}"
    work.mkdir(parents=True, exist_ok=True)
    targets = end_offsets(bootstrap, events_topic, partitions)
    process = Watched(
        peer.command(python, bootstrap, events_topic, group, partitions, work),
        marks={"first": r"PEER first", "changelog": r"^PEER changelog (.*)$"},
        cwd=work,  # faust writes its data directory into the working directory
    )
    try:
        started = process.wait_mark("first", 120)
        cpu_start = cpu_seconds(process.pid)
        limit = min(timeout, peer.budget) if peer.budget else timeout
        try:
            done = wait_committed(
                bootstrap, group, events_topic, targets, timeout=limit, alive=process.alive
            )
        except BenchError as exc:
            if not process.alive() or peer.budget is None:
                raise BenchError(f"{exc}; its output: {process.tail(8)}") from exc
            return _partial(peer, bootstrap, group, events_topic, partitions, total, started)
        cpu_end = cpu_seconds(process.pid)
        if peer.stops_by_itself:
            code = process.finish(timeout=120)
            if code != 0:
                raise BenchError(f"{peer.label} exited with {code}: {process.tail()}")
    finally:
        process.stop()
        shutil.rmtree(work, ignore_errors=True)
    if peer.stops_by_itself:
        found = process.match("changelog")
        changelogs: list[str] = json.loads(found.group(1)) if found else []
    else:
        changelogs = [f"{group}-runs-changelog"]
    seconds = done - started
    if not changelogs:
        problem = f"{peer.label}: no changelog topic reported, its state could not be checked"
    else:
        problem = compare_states(
            peer.label, _changelog_state(bootstrap, changelogs, partitions), expected
        )
    cpu = cpu_end - cpu_start if cpu_start is not None and cpu_end is not None else None
    extra: dict[str, Any] = {"seconds": seconds, "cpu_seconds": cpu, "changelogs": changelogs}
    return Measurement(
        peer.key, STAGE, peer.label, total / seconds, "ev/s",
        detail=f"{total:,} events in {seconds:.2f}s{per_cpu(total, cpu)}, {peer.detail}",
        valid=not problem,
        note=problem or "final state = runfold's (status, last_seq, events per run)",
        extra=extra,
    )
