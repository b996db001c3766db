"""The streams users have, beside the clean one every other stage reads.

- **Confluent framing**: the same fleet with Confluent's framing (``00`` + schema id from a
  registry; ``mock://`` here, so the service registers the same schema in its own process
  and gets the same id: see :func:`registry_launcher`).
- **Faulty**: every fault of the simulator at 2 % of runs (:data:`FAULTS`). runfold's state
  is checked against the simulator's manifest; the peers' lighter fold (no reorder buffer,
  no content digests) ends elsewhere by design, so theirs is checked against that fold run
  here over the same records (:func:`peer_reference`).
- **Large payloads**: the same fleet with a text field of 1-4 KB (2 KB on average, seeded)
  added to the payload of every event but the run's start and end: tool arguments and
  results, message text. Added by the bench's own encoder (``Fleet(encode=...)``), so the
  simulator's default bytes do not change.
- **Active runs**: every run's first three events only (runs stay open, their state
  touched), for the resident memory per active run beside the restored-untouched figure.
"""

from __future__ import annotations

import io
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

from bench.peers.peer_fold import fold_run
from bench.runfold_stages import FinalState, Workload, expected_state
from producers import FaultRates, Fleet, FleetConfig
from schemas import Event
from schemas.codec import EventCodec

__all__ = [
    "ACTIVE_SEQS",
    "FAULTS",
    "REGISTRY",
    "VARIANTS",
    "Variant",
    "active_records",
    "load",
    "peer_reference",
    "registry_launcher",
]

REGISTRY = "mock://runfold-bench"
FAULTS = FaultRates(gap=0.02, dup=0.02, reorder=0.02, after_end=0.02, conflict=0.02,
                    corrupt=0.02)
ACTIVE_SEQS = 3
"""Events kept per run of the active-runs stream."""
_EVENT_SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "avro" / "Event.v1.avsc"
_WORDS = ("the", "tool", "returned", "rows", "customer", "query", "select", "from", "where",
          "order", "total", "assistant", "summary", "ticket", "priority", "refund", "status",
          "error", "retry", "context", "function", "arguments", "result", "json", "value")
_PLAIN_ENDS = ("GraphStarted", "GraphCompleted", "GraphFailed", "GraphInterrupted")

Records = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Variant:
    """One of the bench's other streams: how it is built and how its rows are named."""

    name: str
    """Key suffix: ``runfold.fold.eos.<name>``, ``peer.quix.eos.<name>``."""
    label: str
    detail: str
    share: int = 2
    """The stream has ``events // share`` events (a large-payload event is ~25× the bytes)."""
    framing: str = "single-object"
    faults: FaultRates = field(default_factory=FaultRates)
    payload_bytes: tuple[int, int] | None = None

    def build(self, events: int) -> tuple[Records, FinalState]:
        """The records, encoded before any clock starts, and runfold's expected state."""
        workload = Workload.for_events(max(1000, events // self.share))
        config = FleetConfig(runs=workload.runs, agents=workload.agents, seed=workload.seed,
                             faults=self.faults)
        fleet = Fleet(config, encode=self._encoder())
        records = [(key, value) for key, value, _ in fleet.records()]
        return records, expected_state(fleet)

    def _encoder(self) -> Callable[[Event], bytes] | None:
        if self.framing == "confluent":
            codec = EventCodec(registry=REGISTRY)
            return lambda event: codec.encode(event, framing="confluent")
        if self.payload_bytes is not None:
            return _padding_encoder(*self.payload_bytes)
        return None  # the simulator's own (direct) writer


VARIANTS = (
    Variant("confluent", "Confluent framing",
            f"same fleet, Confluent framing (00 + schema id, registry {REGISTRY})",
            framing="confluent"),
    Variant("faulty", "faulty stream",
            f"every simulator fault at 2 % of runs ({FAULTS.as_text()})", faults=FAULTS),
    Variant("large", "1-4 KB payloads",
            "same fleet, a 1-4 KB text field (2 KB average) in every payload but the run's "
            "start and end", share=4, payload_bytes=(1024, 4096)),
)


def _padding_encoder(low: int, high: int) -> Callable[[Event], bytes]:
    """Encode events with a seeded text of ``low``-``high`` bytes added to their payload."""
    codec = EventCodec()
    rng = random.Random(17)
    mode = low  # triangular(low, high, low): the mean is (2 low + high) / 3, 2 KB for 1-4 KB

    def text(size: int) -> str:
        words: list[str] = []
        length = 0
        while length < size:
            word = rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        return " ".join(words)[:size]

    def encode(event: Event) -> bytes:
        if type(event.kind).__name__ in _PLAIN_ENDS or not isinstance(event.payload, dict):
            return codec.encode(event)
        size = int(rng.triangular(low, high, mode))
        padded = event.model_copy(update={"payload": {**event.payload, "text": text(size)}})
        return codec.encode(padded)

    return encode


def active_records(events: int) -> tuple[Records, FinalState]:
    """Each run's first :data:`ACTIVE_SEQS` records: open runs, and their expected state.

    20,000 runs in a full run (the whole fleet is simulated, ~40 events per run, and the
    rest dropped: more would cost the bench more than it tells).
    """
    workload = Workload.for_events(events)
    runs = max(1000, min(20_000, events // 25))
    fleet = Fleet(FleetConfig(runs=runs, agents=workload.agents, seed=workload.seed + 1))
    records: Records = []
    expected: FinalState = {}
    for key, value, meta in fleet.records():
        if meta.seq is not None and meta.seq <= ACTIVE_SEQS:
            records.append((key, value))
            expected[key.decode()] = ("RUNNING", meta.seq, meta.seq)
    return records, expected


def peer_reference(records: Records) -> FinalState:
    """The peers' fold (:func:`peer_fold.fold_run`) over ``records`` in order, here.

    A record whose single-object header is not the Event schema's, or whose body does not
    read, is skipped, as the peers skip it (runfold sends it to its DLQ).
    """
    schema = fastavro.parse_schema(json.loads(_EVENT_SCHEMA.read_text()))
    header = EventCodec().header("single-object")
    runs: dict[str, dict[str, Any]] = {}
    for key, value in records:
        if not value.startswith(header):
            continue
        try:
            event: dict[str, Any] = fastavro.schemaless_reader(  # type: ignore[assignment]
                io.BytesIO(value[len(header):]), schema, None, return_record_name=True)
        except (EOFError, ValueError, IndexError, UnicodeDecodeError):
            continue
        run_id = key.decode()
        runs[run_id] = fold_run(runs.get(run_id), event)
    return {run_id: (run["status"], run["last_seq"], run["events"])
            for run_id, run in runs.items()}


_SHIM = """\
import sys
from schemas.codec import EventCodec, configure_registry
from schemas.framing import registry_client
client = registry_client(sys.argv.pop(1))
# An in-memory registry is per process: registering the current Event schema first gives
# it the id the bench's producer got in its own (1), as a shared registry would.
EventCodec(registry=client).header("confluent")
configure_registry(client)
from runfold.cli import main
main()
"""


def registry_launcher() -> tuple[str, ...]:
    """``python -c <shim> mock://...``: ``runfold``'s CLI with the bench's registry configured.

    ``runfold consume`` has no option naming a schema registry (``schema_registry_url`` in
    the settings is not read by the service), so the bench configures the codec's
    module-level registry in the service's process before handing over to the CLI.
    """
    return (sys.executable, "-c", _SHIM, REGISTRY)


def load(bootstrap: str, topic: str, records: Records) -> None:
    """Write ``records`` to ``topic`` with runfold's producer settings (not timed)."""
    from confluent_kafka import Producer

    from producers.kafka import DEFAULT_PRODUCER_CONFIG

    producer = Producer({**DEFAULT_PRODUCER_CONFIG, "bootstrap.servers": bootstrap})
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(300)
    if left:
        from bench.kafka_env import BenchError

        raise BenchError(f"{left} records of {topic} were not delivered")
