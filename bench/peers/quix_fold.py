"""The benchmark's fold written for Quix Streams: per-run state, last-seq check, status.

Runs inside its own virtual environment (Quix Streams pins an older confluent-kafka than
runfold), so it imports nothing from runfold: the Event schema comes from the ``.avsc``
file given with ``--schema`` and records are read with fastavro, as Quix's own Avro
deserializer does. Exactly-once (``processing_guarantee="exactly-once"``), state in
RocksDB with its changelog topic; commits every ``--commit-every`` records or
``--commit-interval`` seconds, like runfold's transactions.

The fold itself is :func:`peer_fold.fold_run`, shared with the other peers.

Lines printed for the benchmark: ``PEER first`` when the first record is processed,
``PEER changelog <json names>`` and ``PEER done <json counters>`` at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Any

import fastavro
from fastavro.schema import fingerprint as schema_fingerprint
from fastavro.schema import to_parsing_canonical_form
from peer_fold import fold_run  # the script's own directory is on sys.path
from quixstreams import Application
from quixstreams.models.serializers import Deserializer

_STATE_KEY = "run"


class EventDeserializer(Deserializer):
    """Framed Avro to a dict with fastavro; ``None`` for a record it cannot read.

    Single-object framing: the 10-byte header must carry the schema's fingerprint.
    Confluent framing: magic byte 0, then a 4-byte schema id (not looked up: the bench
    has one writer schema), then the body.
    """

    def __init__(self, schema_path: str, framing: str) -> None:
        super().__init__()
        with open(schema_path, encoding="utf-8") as handle:
            self._schema = fastavro.parse_schema(json.load(handle))
        fingerprint = to_parsing_canonical_form(self._schema)
        if framing == "confluent":
            self._magic, self._skip = b"\x00", 5
        else:
            self._magic = b"\xc3\x01" + bytes.fromhex(
                schema_fingerprint(fingerprint, "CRC-64-AVRO"))
            self._skip = 10

    def __call__(self, value: bytes, ctx: Any) -> Any:
        if not value.startswith(self._magic):
            return None
        try:
            return fastavro.schemaless_reader(
                io.BytesIO(value[self._skip:]), self._schema, None, return_record_name=True
            )
        except (EOFError, ValueError, IndexError, UnicodeDecodeError):
            return None  # a corrupt record of the faulty stream: skipped, as runfold's DLQ


def fold(event: dict[str, Any], state: Any) -> None:
    """Fold one event into the run's state kept by Quix (RocksDB, changelogged)."""
    state.set(_STATE_KEY, fold_run(state.get(_STATE_KEY), event))


def main() -> None:
    parser = argparse.ArgumentParser(description="Quix Streams peer of runfold's fold")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--guarantee", default="exactly-once")
    parser.add_argument("--commit-every", type=int, required=True)
    parser.add_argument("--commit-interval", type=float, required=True)
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument("--framing", choices=("single-object", "confluent"),
                        default="single-object")
    args = parser.parse_args()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee=args.guarantee,
        commit_every=args.commit_every,
        commit_interval=args.commit_interval,
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(
        args.topic, key_deserializer="str",
        value_deserializer=EventDeserializer(args.schema, args.framing),
    )
    processed = 0

    def counted_fold(event: dict[str, Any], state: Any) -> None:
        nonlocal processed
        if not processed:
            print("PEER first", flush=True)
        processed += 1
        fold(event, state)

    sdf = app.dataframe(topic)
    sdf = sdf.filter(lambda event: event is not None)
    sdf.update(counted_fold, stateful=True)
    app.run(timeout=args.idle, collect=False)
    changelogs = [t.name for t in app._topic_manager.changelog_topics_list]  # noqa: SLF001
    print("PEER changelog " + json.dumps(changelogs), flush=True)
    print("PEER done " + json.dumps({"processed": processed}), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
