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
from bench.live_stages import LiveFolder
from bench.peers import streams_peer
from bench.peers.venvs import WORK, ensure_venv
from bench.results import Measurement
from bench.runfold_stages import FinalState, ServiceTopics, compare_states, per_cpu
from consumers.service.config import DEFAULT_BATCH_SIZE, DEFAULT_TXN_INTERVAL_MS
from consumers.service.restore import read_latest_by_key

__all__ = [
    "FAUST", "FAUST_REQUIREMENTS", "QUIX", "QUIX_OWN", "QUIX_REQUIREMENTS", "STREAMS", "Peer",
    "PeerStream", "run_peer", "streams_live",
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


def _json_state(key: bytes, value: bytes) -> tuple[str, tuple[str, int, int]]:
    """A Python peer's changelog record: JSON text key and value.

    Quix writes ``"<run_id>"|"run"`` (message key, then state key), faust ``"<run_id>"``;
    values are the JSON state of :func:`peer_fold.fold_run`.
    """
    run = json.loads(value)
    return json.loads(key.split(b"|", 1)[0]), (run["status"], run["last_seq"], run["events"])


def _changelog_state(bootstrap: str, topics: list[str], partitions: int,
                     decode: StateDecoder) -> FinalState:
    """A peer's committed state from its changelog topics (read_committed, latest per key)."""
    states: FinalState = {}
    for topic in topics:
        latest = read_latest_by_key(
            {"bootstrap.servers": bootstrap}, topic, list(range(partitions)), timeout=120
        )
        for part in latest.values():
            for key, value in part.latest.items():
                run_id, state = decode(key, value)
                states[run_id] = state
    return states


StateDecoder = Callable[[bytes, bytes], tuple[str, tuple[str, int, int]]]


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
    java: bool = False
    """A JVM peer built with Maven (``script`` is then its project directory)."""

    def prepare(self, *, create: bool, echo: Callable[[str], None]) -> list[str] | str:
        """The start of its command line (interpreter or JVM), or why it cannot run."""
        if self.java:
            missing = streams_peer.missing_tools()
            if missing is not None:
                return f"skipped: {missing}"
            target = streams_peer.ensure_jar(create=create, echo=echo)
            if target is None:
                return ("skipped: the Kafka Streams peer is not built yet (--quick does not "
                        "build it; a run without --quick, or --peers, does)")
            return streams_peer.java_command(target)
        python = ensure_venv(self.venv, self.requirements, create=create, echo=echo)
        if python is None:
            return (f"skipped: its environment bench/.work/{self.venv}-venv is not built yet "
                    "(--quick does not build it; a run without --quick, or --peers, does)")
        return [str(python), str(_PEERS / self.script)]

    def command(self, start: list[str], bootstrap: str, topic: str, group: str,
                partitions: int, work: Path, framing: str) -> list[str]:
        """The peer's command line after :meth:`prepare`'s start."""
        cmd = [*start, "--bootstrap", bootstrap, "--topic", topic, "--group", group,
               "--schema", str(_EVENT_SCHEMA), *self.cadence]
        if self.java or self.venv == "quix":
            cmd += ["--state-dir", str(work), "--idle", "2", "--framing", framing]
            return cmd
        return [*cmd, "--partitions", str(partitions)]

    @property
    def decode_state(self) -> StateDecoder:
        """How its changelog records read back."""
        return streams_peer.decode_state if self.java else _json_state


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
STREAMS = Peer(
    "peer.streams.eos", "Kafka Streams 4.1 fold, exactly_once_v2", "", (),
    "streams",
    "Avro BinaryMessageDecoder, KTable aggregate in RocksDB + changelog, "
    f"commit.interval.ms {DEFAULT_TXN_INTERVAL_MS}, one stream thread per core",
    stops_by_itself=True,
    cadence=("--commit-interval-ms", str(DEFAULT_TXN_INTERVAL_MS)),
    java=True,
)
FAUST = Peer(
    "peer.faust.eos", "faust-streaming 0.15 fold, exactly_once", "faust", FAUST_REQUIREMENTS,
    "faust_fold.py",
    f"fastavro decode, in-memory Table + changelog, {_CADENCE_TEXT}",
    stops_by_itself=False,
    budget=90.0,
)


@dataclass(frozen=True)
class PeerStream:
    """Which of the bench's streams a peer reads, and what its state is checked against."""

    key_suffix: str = ""
    label_suffix: str = ""
    framing: str = "single-object"
    detail: str = ""
    agreed: str = "final state = runfold's (status, last_seq, events per run)"
    """The note of a row whose state matched."""


def _partial(peer: Peer, bootstrap: str, group: str, topic: str, partitions: int,
             total: int, started: float, key: str, label: str) -> Measurement:
    """The rate of a peer stopped at its budget, from the offsets it had committed."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = committed_offsets(consumer, topic, partitions)
    finally:
        consumer.close()
    seconds = time.monotonic() - started
    done = sum(max(0, offset) for offset in committed.values())
    return Measurement(
        key, STAGE, label, done / seconds, "ev/s",
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
    stream: PeerStream | None = None,
) -> Measurement:
    """``peer`` doing the fold over ``events_topic``, timed and checked against ``expected``."""
    stream = stream or PeerStream()
    key, label = peer.key + stream.key_suffix, peer.label + stream.label_suffix
    start = peer.prepare(create=create_venv, echo=echo)
    if isinstance(start, str):
        return Measurement.missing(key, STAGE, label, "ev/s", start)
    work = WORK / f"{peer.venv or peer.script}-state-{group}"
    work.mkdir(parents=True, exist_ok=True)
    targets = end_offsets(bootstrap, events_topic, partitions)
    process = Watched(
        peer.command(start, bootstrap, events_topic, group, partitions, work, stream.framing),
        marks={"first": r"PEER first", "changelog": r"^PEER changelog (.*)$",
               "done": r"^PEER done (.*)$"},
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
            return _partial(peer, bootstrap, group, events_topic, partitions, total, started,
                            key, label)
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
        problem = f"{label}: no changelog topic reported, its state could not be checked"
    else:
        problem = compare_states(
            label, _changelog_state(bootstrap, changelogs, partitions, peer.decode_state),
            expected,
        )
    cpu = cpu_end - cpu_start if cpu_start is not None and cpu_end is not None else None
    found = process.match("done")
    own: dict[str, Any] = json.loads(found.group(1)) if found else {}
    extra: dict[str, Any] = {"seconds": seconds, "cpu_seconds": cpu, "changelogs": changelogs,
                             "own": own}
    detail = f"{total:,} events in {seconds:.2f}s{per_cpu(total, cpu)}, {peer.detail}"
    if own.get("seconds"):
        detail += (f"; its own count: {own['processed']:,} folded in {own['seconds']:.2f}s "
                   "(first to last record)")
    if stream.detail:
        detail += f"; {stream.detail}"
    return Measurement(
        key, STAGE, label, total / seconds, "ev/s",
        detail=detail,
        valid=not problem,
        note=problem or stream.agreed,
        extra=extra,
    )


def streams_live(
    *, create: bool, echo: Callable[[str], None],
) -> Callable[[str, ServiceTopics, str, float], LiveFolder] | str:
    """The Kafka Streams peer as the latency stage's folder, or why it cannot run.

    Its state lands in its changelog topic when a commit writes it (transactional, every
    ``commit.interval.ms``): the reader of the latency stage sees it there as a downstream
    consumer of the KTable would.
    """
    start = STREAMS.prepare(create=create, echo=echo)
    if isinstance(start, str):
        return start

    def folder(bootstrap: str, topics: ServiceTopics, group: str, seconds: float) -> LiveFolder:
        work = WORK / f"streams-state-{group}"
        work.mkdir(parents=True, exist_ok=True)
        cmd = STREAMS.command(start, bootstrap, topics.events, group, 0, work, "single-object")
        # Stopped by the stage; idle only once the load has ended and the reader is done.
        cmd[cmd.index("--idle") + 1] = str(seconds + 60)
        process = Watched(cmd, marks={"running": r"PEER running"}, cwd=work)

        def read_state(key: bytes, value: bytes) -> tuple[str, int]:
            run_id, (_, last_seq, _) = streams_peer.decode_state(key, value)
            return run_id, last_seq

        return LiveFolder(process, "running", f"{group}-{streams_peer.STORE}-changelog",
                          read_state, key="latency.streams",
                          label="Kafka Streams end-to-end latency",
                          cleanup=lambda: shutil.rmtree(work, ignore_errors=True))

    return folder
