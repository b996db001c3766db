"""Where ``runfold consume`` spends its time on one of the bench's streams (py-spy).

    .venv/bin/python -m bench.profile_workload confluent [--events 250000] [--top 25]
    .venv/bin/python -m bench.profile_workload large --bootstrap HOST:PORT --out prof.txt

Starts a local broker unless ``--bootstrap`` is given, loads the stream (``clean``,
``confluent``, ``faulty``, ``large``; built as ``runfold bench`` builds it), then runs
``runfold consume --guarantee exactly-once --until-idle 2`` over it under
``py-spy record -f raw`` (CPU samples only) (needs ``pip install py-spy``) and prints the functions
with the most samples, own and inclusive, over the main thread and all threads.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench import runfold_stages, workloads
from bench.kafka_env import BenchBroker, create_topic, warm_up


def _top(raw: Path, top: int) -> None:
    """Own and inclusive samples per function from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = [frame.split(" (")[0] for frame in stack.split(";")]
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    print(f"{total:,} samples")
    for title, counter in (("own", own), ("inclusive", inclusive)):
        print(f"\n-- top {top} by {title} samples --")
        for name, samples in counter.most_common(top):
            print(f"{samples / total:6.1%}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stream", choices=["clean", *(v.name for v in workloads.VARIANTS)])
    parser.add_argument("--events", type=int, default=250_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None, help="keep the raw profile here")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit("py-spy not found: pip install py-spy")

    variant = next((v for v in workloads.VARIANTS if v.name == args.stream), None)
    if variant is None:
        workload = runfold_stages.Workload.for_events(args.events)
        records = workload.records()
        launcher: tuple[str, ...] = runfold_stages.RUNFOLD
    else:
        records, _ = variant.build(args.events * variant.share)
        launcher = (workloads.registry_launcher() if variant.framing == "confluent"
                    else runfold_stages.RUNFOLD)
    raw = args.out or Path(tempfile.mkdtemp(prefix="profile-")) / "fold.txt"
    with BenchBroker(args.bootstrap, echo=print) as broker:
        prefix = f"prof-{uuid.uuid4().hex[:6]}-"
        warm_up(broker.bootstrap, broker.admin(), f"{prefix}warmup")
        topics = runfold_stages.ServiceTopics.own(f"{prefix}events", prefix)
        create_topic(broker.admin(), topics.events, args.partitions)
        topics.create(broker.admin(), args.partitions)
        workloads.load(broker.bootstrap, topics.events, records)
        print(f"loaded {len(records):,} records of the {args.stream} stream; profiling")
        # CPU samples only (no --idle): where the process works, not where it waits.
        cmd = [py_spy, "record", "-r", "200", "-f", "raw", "-o", str(raw), "--",
               *launcher, "consume", "--bootstrap-servers", broker.bootstrap,
               "--group", f"{prefix}group", "--guarantee", "exactly-once",
               "--until-idle", "2", "--stats-json"]
        subprocess.run(cmd, env={**os.environ, **runfold_stages.service_env(topics)},
                       check=True)
    _top(raw, args.top)
    print(f"\nraw profile: {raw}")


if __name__ == "__main__":
    main()
