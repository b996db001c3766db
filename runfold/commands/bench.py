"""``runfold bench``: runfold against its anchors (client, broker, Quix Streams), one broker.

Examples::

    runfold bench --quick                        # under two minutes on a quiet machine (CI)
    runfold bench --json bench.json --doc docs/benchmarks.md --doc README.md
    runfold bench --bootstrap 127.0.0.1:9092 --stages fold,peers

The stages live in the ``bench`` package (installed with runfold); the peers' environments
are built under ``bench/.work/`` beside it.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["bench"]

def _stages(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...]:
    from bench.suite import STAGES

    if not value:
        return STAGES
    chosen = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise click.BadParameter(
            f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}",
            ctx=ctx, param=param,
        )
    return chosen


@click.command()
@click.option("--events", type=click.IntRange(min=1000), default=None,
              help="Events in the pre-loaded topic [default: 500,000; 10,000 with --quick].")
@click.option("--quick", is_flag=True,
              help="A short run for CI (<2 min on a quiet machine): 10k events, 3 s of latency, "
                   "10k runs to restore; peers only if their environment is already built.")
@click.option("--bootstrap", default=None, metavar="HOST:PORT",
              help="Use this broker (its topics are deleted after) instead of starting one.")
@click.option("--partitions", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--rate", type=click.FloatRange(min=100), default=10_000.0, show_default=True,
              help="Offered events/s for the latency stage.")
@click.option("--latency-seconds", type=click.FloatRange(min=1), default=None,
              help="How long to offer load for latency [default: 30; 3 with --quick].")
@click.option("--restore-runs", type=click.IntRange(min=100), default=None,
              help="Runs to restore [default: 1,000,000; 10,000 with --quick].")
@click.option("--week-runs", type=click.IntRange(min=400), default=None,
              help="Finished runs of the larger simulated week; the smaller has a quarter "
                   "[default: 1,000,000; 20,000 with --quick].")
@click.option("--week-active", type=click.IntRange(min=1), default=None,
              help="Runs still open at the end of each week [default: 10,000; 1,000 with "
                   "--quick].")
@click.option("--peers/--no-peer-setup", "peers", default=None,
              help="Build the peers' environments (bench/.work) when missing "
                   "[default: yes, except with --quick].")
@click.option("--stages", callback=_stages, default=None, metavar="A,B,...",
              help="Only these stages: anchors, producer, fold, peers, workloads, latency, "
                   "restore, week.")
@click.option("--consume-arg", "consume_args", multiple=True, metavar="ARG",
              help="Extra option for every `runfold consume` of the fold and latency stages, "
                   "e.g. --consume-arg=--txn-interval-ms=100 (repeatable).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the full report as JSON here.")
@click.option("--doc", "doc_paths", type=click.Path(dir_okay=False, path_type=Path),
              multiple=True,
              help="Replace the generated section of this Markdown file (e.g. "
                   "docs/benchmarks.md, README.md) with the tables (repeatable).")
def bench(events: int | None, quick: bool, bootstrap: str | None, partitions: int, rate: float,
          latency_seconds: float | None, restore_runs: int | None, week_runs: int | None,
          week_active: int | None, peers: bool | None,
          stages: tuple[str, ...], consume_args: tuple[str, ...], json_path: Path | None,
          doc_paths: tuple[Path, ...]) -> None:
    """Measure runfold beside the client, the broker and Quix Streams, on one broker."""
    from rich.console import Console

    from bench.render import markdown, print_report, update_doc
    from bench.suite import SuiteOptions, run_suite

    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "events": events, "bootstrap": bootstrap, "partitions": partitions,
            "latency_rate": rate, "latency_seconds": latency_seconds,
            "restore_runs": restore_runs, "week_runs": week_runs, "week_active": week_active,
            "peers": peers, "stages": stages,
            "consume_args": consume_args or None,
        }.items()
        if value is not None
    }
    options = SuiteOptions.quick_defaults(**overrides) if quick else SuiteOptions(**overrides)
    console = Console(stderr=True)

    def echo(message: str) -> None:
        console.print(f"[dim]{message}[/]", highlight=False)

    report = run_suite(options, echo=echo)
    # Piped or captured output gets a wide table: a log line beats a folded cell.
    print_report(report, Console(width=None if sys.stdout.isatty() else 180))
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_json(), indent=1) + "\n")
        echo(f"wrote {json_path}")
    command = "runfold " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    for doc_path in doc_paths:
        update_doc(doc_path, markdown(report, command))
        echo(f"updated {doc_path}")
