"""``runfold demo``: the whole pipeline on one machine, in a couple of minutes.

1. Kafka: the cluster the settings name when one is configured (``--bootstrap-servers``,
   ``KAFKA_BOOTSTRAP_SERVERS``, ``RUNFOLD_BOOTSTRAP_SERVERS``, ``$RUNFOLD_CONFIG``);
   otherwise the local broker of ``runfold kafka up``, started if it is not running.
   A broker the demo started is stopped at the end unless ``--keep``.
2. The four topics (created if missing).
3. The folding service, in a thread of this process (group ``runfold``).
4. The fleet simulator: a few hundred runs from a dozen agents, with faults of every
   kind injected, rate-limited so that the live view has something to show.
5. The live view of ``runfold top`` while it runs, then a summary that sets what the
   output topics say next to the simulator's manifest (the ground truth).

The seed is random unless ``--seed`` is given, so a second demo on the same topics sends
new runs. The demo shares the topics and the group with earlier demos (and folds what a
crashed one left unfolded); the summary counts only this demo's records, by run id and by
the offsets captured before it sent anything (see :mod:`runfold.demo_scope`).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.console import Console, RenderableType
from rich.text import Text

from clients import RunfoldSettings
from producers.faults import FaultRates, FaultSpecError
from runfold.commands.options import (
    bootstrap_servers_option,
    connected_settings,
    group_option,
    prefix_option,
)
from runfold.demo_summary import KINDS, STATUSES, DemoSummary, check, next_steps, render_summary
from schemas.errors import RunfoldError

__all__ = ["DEFAULT_FAULTS", "DemoError", "DemoOptions", "demo", "run_demo"]

DEFAULT_FAULTS = "gap=0.02,dup=0.02,reorder=0.02,after_end=0.02,conflict=0.02,corrupt=0.02"
"""About six runs of 300 get each fault."""



class DemoError(RunfoldError):
    """The demo could not finish (the consumer failed or did not catch up in time)."""


# librdkafka logs normal retries on a fresh broker (coordinator loading, no leader yet)
# and connection errors while the broker the demo started is stopped; printed over the
# live view they only alarm. Real failures still reach the demo as exceptions.
# (The segfaults once blamed on Python loggers here were librdkafka's admin
# ListConsumerGroupOffsets on a fresh broker, see runfold/live.py; with that gone, the
# demo's EventProducer, which logs through a Python logger, ran clean.)
_QUIET = {"log_level": 2}


def _failed(cause: BaseException) -> DemoError:
    return DemoError(f"the demo stopped: {cause}")


@dataclass
class DemoOptions:
    """What ``runfold demo`` does; the defaults are the README's demo."""

    runs: int = 300
    agents: int = 12
    seed: int | None = None
    faults: str = DEFAULT_FAULTS
    rate: float | None = 600.0
    """Records per second sent by the fleet; ``None``: as fast as the broker takes them."""
    live: bool = True
    keep: bool = False
    port: int | None = None
    bootstrap_servers: str | None = None
    prefix: str | None = None
    group: str = "runfold"
    partitions: int = 6
    catch_up_timeout: float = 180.0
    manifest_path: Path | None = None
    """Where to write the simulator's manifest (the ground truth), if anywhere."""


def _kafka(options: DemoOptions, say: Callable[[str], None]) -> tuple[str | None, str, Any]:
    """``(bootstrap or None for the settings', how, local cluster to stop or None)``."""
    configured = options.bootstrap_servers or any(
        os.environ.get(name)
        for name in ("KAFKA_BOOTSTRAP_SERVERS", "RUNFOLD_BOOTSTRAP_SERVERS", "RUNFOLD_CONFIG")
    )
    if configured:
        return options.bootstrap_servers, "external", None
    from clients.cluster_state import default_home
    from runfold.kafka.compose import ComposeKafka, docker_available, find_compose_file
    from runfold.kafka.local import LocalKafka

    home = default_home()
    compose_file = find_compose_file()
    if options.port is None and compose_file is not None and docker_available():
        compose = ComposeKafka(home, compose_file)
        if compose.is_running():
            return "127.0.0.1:9092", "local", None
        say(f"starting Kafka with docker compose ({compose_file})")
        return compose.up(), "started", compose
    local = LocalKafka(home)
    if local.is_running() and local.bootstrap:
        return local.bootstrap, "local", None
    port = options.port if options.port is not None else _default_port_or_any(local, say)
    say(f"starting a local Kafka broker (data in {local.root})")
    started = time.monotonic()
    # Unless it is to outlive the demo, the broker dies with it even on a kill -9.
    bootstrap = local.up(nodes=1, port=port, echo=say, tie_to_parent=not options.keep)
    say(f"Kafka ready at {bootstrap} in {time.monotonic() - started:.0f}s")
    return bootstrap, "started", local


def _default_port_or_any(local: Any, say: Callable[[str], None]) -> int | None:
    """The default port, or any free one (0) when something else listens there.

    This project's own broker was found running above; whatever holds the port now is
    not it (another checkout's broker, another program), and the demo must not write
    into someone else's Kafka: it starts its own on a free port and says so. The
    commands it suggests afterwards find that broker through ``.runfold/kafka``.
    """
    from runfold.kafka import process
    from runfold.kafka.local import DEFAULT_PORT

    if process.port_is_free(local.host, DEFAULT_PORT):
        return None
    say(
        f"port {DEFAULT_PORT} on {local.host} is in use, and not by this project's broker: "
        "starting the demo's broker on a free port instead (use that Kafka with "
        f"`--bootstrap-servers {local.host}:{DEFAULT_PORT}`)"
    )
    return 0


def run_demo(options: DemoOptions, console: Console | None = None) -> DemoSummary:
    """Run the demo end to end and return its summary (see the module docstring)."""
    console = console or Console()
    say = console.print
    try:
        rates = FaultRates.parse(options.faults)
    except FaultSpecError as exc:
        raise DemoError(f"--faults: {exc}") from exc
    bootstrap, broker, cluster = _kafka(options, say)
    stopped = False
    try:
        summary = _run(options, rates, bootstrap, broker, console)
    finally:
        if cluster is not None and not options.keep:
            say("stopping the Kafka broker the demo started (--keep leaves it running)")
            cluster.down()
            stopped = True
    summary.broker_stopped = stopped
    return summary


def _run(options: DemoOptions, rates: FaultRates, bootstrap: str | None, broker: str,
         console: Console) -> DemoSummary:
    from consumers.service import FoldService, ServiceConfig
    from producers import EventProducer, Fleet, FleetConfig, produce_fleet
    from producers.runs import plan_run
    from runfold.demo_scope import capture_scope
    from runfold.live import FleetReader, render_snapshot
    from runfold.topics import ensure_topics

    settings = connected_settings(bootstrap, options.prefix)
    names = settings.topic_names
    report = ensure_topics(settings.admin_config(_QUIET), names, partitions=options.partitions)
    for problem in report.mismatches:
        console.print(f"[yellow]warning:[/] {problem}")
    if report.created:
        _await_leaders(settings, report.created)
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(10**6)
    fleet = Fleet(FleetConfig(runs=options.runs, agents=options.agents, seed=seed, faults=rates))
    reader = FleetReader(settings, options.group)
    try:
        # What is there already: the view's starting point, and whether this seed's runs
        # are among it (run ids come from the seed).
        reader.refresh(budget=60.0, until_caught_up=True)
        first_run = str(plan_run(seed, 0, fleet.agents[0], rates).run_id)
        if reader.has_run(first_run):
            raise DemoError(
                f"the runs of seed {seed} are already in {names.runs} (an earlier demo with "
                f"--seed {seed}); sent again they would fold as duplicates. Use another "
                "--seed, or fresh topics with --prefix"
            )
        scope = capture_scope(settings.client_config(), options.group, names.events,
                              names.dlq)
        producer = EventProducer(names.events, settings=settings, config=_QUIET)
        producer.connect()
    except BaseException:
        reader.close()
        raise
    console.print(
        f"[bold]runfold demo[/]: {options.runs} runs from {options.agents} agents "
        f"(seed {seed}, faults {rates.as_text() or 'none'}) → {names.events} on "
        f"{settings.bootstrap_servers}"
    )
    if scope.leftover:
        console.print(
            f"{scope.leftover:,} records of earlier runs in {names.events} are not folded yet "
            f"(an interrupted demo?); group {options.group} folds them first, and the "
            "summary counts only this demo's records"
        )

    service = FoldService(ServiceConfig.on_topics(
        dict(settings.client_config()), names, group=options.group, instance_id="demo",
        txn_interval_ms=250,
        consumer_overrides=dict(_QUIET), producer_overrides=dict(_QUIET),
    ))
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            service.run()
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    sent = [0]
    produced: list[Any] = []

    def produce() -> None:
        try:
            produced.append(produce_fleet(fleet, producer, rate=options.rate,
                                          on_record=lambda n: sent.__setitem__(0, n)))
        except BaseException as exc:
            failure.append(exc)

    started = time.monotonic()
    consumer_thread = threading.Thread(target=consume, name="runfold-demo-fold", daemon=True)
    producer_thread = threading.Thread(target=produce, name="runfold-demo-fleet", daemon=True)
    consumer_thread.start()
    producer_thread.start()

    def footer() -> RenderableType:
        done = not producer_thread.is_alive()
        return Text.assemble(
            ("fleet ", "bold"), f"{fleet.runs_finished}/{options.runs} runs, {sent[0]:,} records",
            (" (all sent, folding the rest)" if done else ""), style="dim")

    deadline: float | None = None
    try:
        with _Frames(console, options.live) as frames:
            while True:
                if failure:
                    raise _failed(failure[0]) from failure[0]
                snapshot = reader.refresh(budget=0.4)
                frames.show(render_snapshot(snapshot, footer()), snapshot.total_lag, sent[0])
                if not producer_thread.is_alive():
                    deadline = deadline or time.monotonic() + options.catch_up_timeout
                    if snapshot.total_lag == 0 and snapshot.lag:
                        break
                    if time.monotonic() > deadline:
                        raise DemoError(
                            f"the folding consumer did not catch up within "
                            f"{options.catch_up_timeout:.0f}s ({snapshot.total_lag} records behind)"
                        )
                time.sleep(0.5)
            fold_seconds = time.monotonic() - started
            final = reader.refresh(budget=5.0, until_caught_up=True)
            frames.show(render_snapshot(final, footer()), 0, sent[0])
    finally:
        service.stop()
        consumer_thread.join(timeout=60)
        producer_thread.join(timeout=60)
        reader.close()
    if failure:
        raise _failed(failure[0]) from failure[0]
    return _summarize(options, settings, fleet, produced[0], service.stats, fold_seconds,
                      seed, broker, scope)


def _await_leaders(settings: RunfoldSettings, topics: list[str], timeout: float = 30.0) -> None:
    """Wait until every partition of new ``topics`` answers an offsets request.

    Metadata names a leader a moment before that leader serves the partition; the
    folding service's first restore would otherwise meet NOT_LEADER on a fresh topic.
    """
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

    admin = AdminClient(settings.admin_config(_QUIET))
    meta = admin.list_topics(timeout=10)
    tps = [TopicPartition(t, p) for t in topics for p in meta.topics[t].partitions]
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + timeout
    while True:
        try:
            for future in admin.list_offsets(dict.fromkeys(tps, latest)).values():
                future.result()
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


class _Frames:
    """The live view on a terminal; a progress line every few seconds otherwise."""

    def __init__(self, console: Console, live: bool) -> None:
        self.console = console
        self.live_enabled = live and console.is_terminal
        self._live: Any = None
        self._last_line = 0.0

    def __enter__(self) -> _Frames:
        if self.live_enabled:
            from rich.live import Live

            self._live = Live(console=self.console, auto_refresh=False)
            self._live.__enter__()
        return self

    def show(self, frame: RenderableType, lag: int, sent: int) -> None:
        if self._live is not None:
            self._live.update(frame, refresh=True)
        elif time.monotonic() - self._last_line >= 5:
            self._last_line = time.monotonic()
            self.console.print(f"sent {sent:,} records, consumer lag {lag:,}")

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)


def _summarize(options: DemoOptions, settings: RunfoldSettings, fleet: Any, produced: Any,
               stats: Any, fold_seconds: float, seed: int, broker: str,
               scope: Any) -> DemoSummary:
    """Read this demo's runs and dead letters back and set them against the manifest."""
    from consumers.service.edge import FoldEdge
    from consumers.service.queries import list_runs
    from runfold.demo_scope import count_dead_letters

    manifest = fleet.manifest()
    if options.manifest_path is not None:
        fleet.write_manifest(options.manifest_path)
    totals = manifest["totals"]
    ours = {entry["run_id"] for entry in manifest["runs"]}
    states = [v.state for v in list_runs(settings.client_config(), settings.topic_names.runs,
                                         FoldEdge.default().read_run)
              if str(v.state.run_id) in ours]
    by_status = Counter(s.status.value for s in states)
    violations: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for state in states:
        for kind, count in state.violation_counts.items():
            if count:
                violations[kind.value] += count
                examples.setdefault(kind.value, str(state.run_id))
    dlq, earlier_dlq = count_dead_letters(settings.client_config(), scope)
    summary = DemoSummary(
        bootstrap=settings.bootstrap_servers,
        topics=settings.topic_names.model_dump(),
        seed=seed,
        runs=options.runs,
        agents=options.agents,
        faults=FaultRates.parse(options.faults).as_text(),
        records_produced=produced.records,
        produce_seconds=round(produced.seconds, 3),
        fold_seconds=round(fold_seconds, 3),
        consumer=stats.as_dict(),
        runs_by_status={s: by_status.get(s, 0) for s in STATUSES},
        expected_runs_by_status={s: totals.get(f"status.{s}", 0) for s in STATUSES},
        violations={k: violations.get(k, 0) for k in KINDS},
        expected_violations={k: totals.get(f"violations.{k}", 0) for k in KINDS},
        example_runs=examples,
        dlq=dlq,
        expected_dlq=totals.get("dlq", 0),
        events_applied=sum(s.events_applied for s in states),
        expected_events_applied=totals.get("applied", 0),
        broker=broker,
        leftover_records=scope.leftover,
        earlier_dlq=earlier_dlq,
    )
    summary.mismatches = check(summary)
    return summary


@click.command()
@click.option("--runs", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--agents", type=click.IntRange(min=1), default=12, show_default=True)
@click.option("--seed", type=int, default=None, help="Fleet seed [default: random, printed].")
@click.option("--faults", default=DEFAULT_FAULTS, show_default=True, metavar="NAME=P,...",
              help="Per-run fault probabilities (see `runfold produce --help`).")
@click.option("--rate", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="Records per second the fleet sends (0: as fast as possible).")
@click.option("--live/--no-live", default=True, show_default=True,
              help="Show the live view while it runs (only on a terminal).")
@click.option("--keep", is_flag=True,
              help="Leave a broker the demo started running afterwards.")
@click.option("--web/--no-web", default=True, show_default=True,
              help="With --keep: serve the web view of the runs afterwards (`runfold serve` "
              "in the background, on port 8080 or a free one).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port for a local broker the demo starts (default 9092).")
@bootstrap_servers_option("Use this Kafka instead of a local one.")
@prefix_option()
@group_option("Folding consumer group.")
@click.option("--summary-json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the summary as JSON here.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the simulator's manifest (the ground truth) here.")
def demo(runs: int, agents: int, seed: int | None, faults: str, rate: float, live: bool,
         keep: bool, web: bool, port: int | None, bootstrap_servers: str | None, prefix: str | None,
         group: str, summary_json: Path | None, manifest: Path | None) -> None:
    """Start Kafka, fold a simulated fleet with injected faults live, and summarize."""
    options = DemoOptions(runs=runs, agents=agents, seed=seed, faults=faults,
                          rate=rate or None, live=live, keep=keep, port=port,
                          bootstrap_servers=bootstrap_servers, prefix=prefix, group=group,
                          manifest_path=manifest)
    console = Console()
    summary = run_demo(options, console)
    console.print(render_summary(summary, rate_limited=options.rate is not None))
    # Plain lines, never wrapped or cropped: they are meant to be pasted.
    click.echo("query further:")
    for hint in next_steps(summary, options.prefix):
        click.echo(f"  {hint}")
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary.as_dict(), indent=1) + "\n")
    if web and keep:
        from runfold.demo_web import start_web_view

        url = start_web_view(summary.bootstrap, prefix, expected_runs=runs)
        click.echo(f"web view of the demo's runs: {url}  (`make kafka-down` stops it and Kafka)")
    if summary.mismatches:
        raise click.exceptions.Exit(2)
