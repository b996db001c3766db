"""The benchmark's fold written for faust-streaming: a Table per run, exactly-once.

Runs in its own virtual environment (faust-streaming runs on aiokafka) and imports nothing
from runfold. Records are read with fastavro (single-object framing: a 10-byte header);
the fold is :func:`peer_fold.fold_run`; the state is an in-memory ``Table`` backed by its
changelog topic ``<group>-runs-changelog``; ``processing_guarantee="exactly_once"``;
commits every ``--commit-every`` records or ``--commit-interval`` seconds.

Faust has no "stop when idle": the benchmark stops this worker (SIGTERM) once the group's
committed offsets reach the end of the topic, then reads the changelog it committed.
Lines printed: ``PEER first`` when the first record is folded.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Any

import fastavro
import faust
from peer_fold import fold_run  # the script's own directory is on sys.path


def build(args: argparse.Namespace) -> faust.App:
    """The faust app: one agent folding the events topic into the ``runs`` table."""
    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        processing_guarantee="exactly_once",
        broker_commit_every=args.commit_every,
        broker_commit_interval=args.commit_interval,
        consumer_auto_offset_reset="earliest",
        topic_partitions=args.partitions,
        topic_replication_factor=1,
        web_enabled=False,
    )
    with open(args.schema, encoding="utf-8") as handle:
        schema = fastavro.parse_schema(json.load(handle))
    events = app.topic(args.topic, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    runs = app.Table("runs", partitions=args.partitions, key_type=str)
    first = [True]

    @app.agent(events)
    async def fold(stream: Any) -> None:
        async for key, value in stream.items():
            if first[0]:
                first[0] = False
                print("PEER first", flush=True)
            event = fastavro.schemaless_reader(
                io.BytesIO(value[10:]), schema, None, return_record_name=True
            )
            run_id = key.decode()
            runs[run_id] = fold_run(runs.get(run_id), event)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="faust-streaming peer of runfold's fold")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--commit-every", type=int, required=True)
    parser.add_argument("--commit-interval", type=float, required=True)
    args = parser.parse_args()
    app = build(args)
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
