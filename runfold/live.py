"""The live view of a fleet: what ``runfold top`` and ``runfold demo`` show.

Two halves, so that the picture can be tested without Kafka:

- :class:`FleetReader` (the Kafka edge) tails ``agent-runs``, ``agent-run-violations``
  and the DLQ with one ``read_committed`` consumer of its own (assigned, not in a group,
  commits nothing), and asks the cluster for the events topic's end offsets and the
  folding group's committed offsets. Each :meth:`FleetReader.refresh` reads what is new
  and returns a :class:`FleetSnapshot`.

  Committed offsets come from ``Consumer.committed()``, never from
  ``AdminClient.list_consumer_group_offsets``: on ``NOT_COORDINATOR`` (a fresh broker
  creating ``__consumer_offsets``) librdkafka 2.16 dereferences a NULL group handle there
  (``rd_kafka_cgrp_op`` under ``rd_kafka_handle_OffsetFetch``, librdkafka #5040); that
  SIGSEGV was ``make demo``'s. A consumer has the handle and just asks again.
- :func:`render_snapshot` turns a snapshot into a rich renderable: runs by status,
  throughput, consumer lag per partition, recent violations, slowest and failing runs.

Rates (events/s in and folded) are deltas between two refreshes, so the first snapshot
has none; ``runfold top --once`` refreshes twice, an interval apart.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from clients.settings import RunfoldSettings, TopicNames
from schemas.errors import KafkaSetupError

__all__ = [
    "STATUSES",
    "FleetReader",
    "FleetSnapshot",
    "PartitionLag",
    "RunSummary",
    "ViolationRow",
    "render_snapshot",
]

STATUSES = ("RUNNING", "COMPLETED", "FAILED", "CANCELLED")
"""Run statuses in the order the view lists them."""

_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What the view keeps of one run's latest state in ``agent-runs``."""

    run_id: str
    status: str
    started_at: int
    """Nanoseconds since the epoch (the run's ``graph_started`` timestamp)."""
    finished_at: int | None
    events_applied: int
    violations: int
    stalled: bool = False
    """RUNNING and flagged stalled (``stalled_since`` set: no event for ``stall_after``)."""
    pending: int = 0
    """Events in the run's reorder buffer (waiting for a missing seq)."""
    pending_oldest_ts: int | None = None
    """The oldest of them's timestamp (ns), None when there is none."""
    stream_time: int = 0
    """The newest event time ``agent-runs`` shows of the run (its start, end or oldest
    pending event), ns: the clock the oldest pending event's age is read against."""

    @property
    def duration_ns(self) -> int | None:
        """Finished minus started, for a finished run."""
        return None if self.finished_at is None else self.finished_at - self.started_at


@dataclass(frozen=True, slots=True)
class ViolationRow:
    """One record of ``agent-run-violations``."""

    run_id: str
    kind: str
    first_seq: int
    last_seq: int
    message: str


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """The folding group's position on one events partition."""

    partition: int
    committed: int | None
    """The group's committed offset; ``None`` when it has committed none yet."""
    low: int
    end: int

    @property
    def lag(self) -> int:
        """Records not yet folded (committed) by the group."""
        start = self.committed if self.committed is not None else self.low
        return max(0, self.end - start)


@dataclass(frozen=True)
class FleetSnapshot:
    """Everything one frame of the live view shows."""

    bootstrap: str
    group: str
    topics: TopicNames
    runs_by_status: dict[str, int]
    events_applied: int
    dlq: int
    violations_by_kind: dict[str, int]
    lag: list[PartitionLag]
    events_in_per_s: float | None
    events_folded_per_s: float | None
    recent_violations: list[ViolationRow]
    slowest: list[RunSummary]
    failing: list[RunSummary]
    taken_at: float = field(default_factory=time.time)
    stalled: int = 0
    """RUNNING runs flagged stalled (counted among RUNNING too)."""
    pending_events: int = 0
    """Events in all reorder buffers (pending = buffered - released), as written."""
    pending_oldest_age_ns: int | None = None
    """Event time: the newest event time in ``agent-runs`` minus the oldest pending event's
    timestamp (what the reorder bound holds each buffer to, per partition); None if none."""

    @property
    def runs_total(self) -> int:
        """Runs in ``agent-runs``."""
        return sum(self.runs_by_status.values())

    @property
    def total_lag(self) -> int:
        """Records of the events topic the group has not committed yet."""
        return sum(p.lag for p in self.lag)


class FleetReader:
    """Tails runfold's output topics and samples the folding group's progress."""

    def __init__(
        self,
        settings: RunfoldSettings,
        group: str = "runfold",
        *,
        recent: int = 8,
        top: int = 5,
        timeout: float = 10.0,
    ) -> None:
        """Prepare (no network yet) a reader of the cluster and topics in ``settings``."""
        self.settings = settings
        self.group = group
        self.topics = settings.topic_names
        self._recent_size = recent
        self._timeout = timeout
        self._top = top
        self._runs: dict[bytes, RunSummary] = {}
        self._violations: Counter[str] = Counter()
        self._recent: deque[ViolationRow] = deque(maxlen=recent)
        self._dlq = 0
        self._consumer: Consumer | None = None
        self._group_offsets: Consumer | None = None
        self._admin: AdminClient | None = None
        self._event_partitions: list[int] = []
        self._behind: set[tuple[str, int]] = set()
        self._previous: tuple[float, int, int] | None = None
        self._read_run: Any = None
        self._decode_violation: Any = None

    # ------------------------------------------------------------------ Kafka edge

    def _connect(self) -> Consumer:
        if self._consumer is not None:
            return self._consumer
        from consumers.service.edge import FoldEdge
        from schemas.codec import decode_violation

        self._read_run = FoldEdge.default().read_run
        self._decode_violation = decode_violation
        config = self.settings.client_config()
        # log_level 3: librdkafka's retry chatter on a fresh broker stays off the view.
        self._admin = AdminClient(self.settings.admin_config({"log_level": 3}))
        consumer = Consumer(
            {
                **config,
                # Never joins the group (assign() only) and never commits.
                "group.id": f"runfold-top-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "log_level": 3,
            }
        )
        topics = self.topics
        wanted = [topics.events, topics.runs, topics.violations, topics.dlq]
        try:
            meta = consumer.list_topics(timeout=self._timeout)
        except KafkaException as exc:
            consumer.close()
            raise KafkaSetupError(
                f"no Kafka broker answered at {config['bootstrap.servers']} ({exc}); is it "
                "running? (`runfold kafka up` starts a local one)"
            ) from exc
        missing = [t for t in wanted if t not in meta.topics or not meta.topics[t].partitions]
        if missing:
            consumer.close()
            raise KafkaSetupError(
                f"topic(s) {', '.join(missing)} do not exist on {config['bootstrap.servers']}; "
                "create them with `runfold topics create` or check the topic prefix"
            )
        self._event_partitions = sorted(meta.topics[topics.events].partitions)
        consumer.assign(
            [
                TopicPartition(name, p, OFFSET_BEGINNING)
                for name in (topics.runs, topics.violations, topics.dlq)
                for p in sorted(meta.topics[name].partitions)
            ]
        )
        # A partition is behind until it reports its end (again, after new records).
        self._behind = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        # Only for committed() of the folding group (module docstring); never subscribes
        # (never joins) nor commits. read_uncommitted: read_committed asks for "stable"
        # offsets, waiting out the service's open transactions.
        self._group_offsets = Consumer({
            **config, "group.id": self.group, "enable.auto.commit": False,
            "enable.auto.offset.store": False, "isolation.level": "read_uncommitted",
            "log_level": 3,
        })
        self._consumer = consumer
        return consumer

    def has_run(self, run_id: str) -> bool:
        """True when ``agent-runs`` held a state of ``run_id`` at the last refresh."""
        return run_id.encode() in self._runs

    def close(self) -> None:
        """Close the consumers (idempotent; call it on the thread that refreshes)."""
        consumer, self._consumer = self._consumer, None
        group_offsets, self._group_offsets = self._group_offsets, None
        for client in (consumer, group_offsets):
            if client is not None:
                client.close()
        self._admin = None

    def __enter__(self) -> FleetReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read(self, budget: float, until_caught_up: bool) -> None:
        """Consume what is new, for up to ``budget`` seconds (or until every partition
        reported its end, when ``until_caught_up``)."""
        consumer = self._connect()
        deadline = time.monotonic() + budget
        behind = self._behind
        while time.monotonic() < deadline:
            msgs = consumer.consume(num_messages=5000, timeout=0.1)
            if not msgs and not until_caught_up:
                return
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        behind.discard((msg.topic() or "", msg.partition() or 0))
                    elif err.fatal():
                        raise KafkaException(err)
                    continue
                behind.add((msg.topic() or "", msg.partition() or 0))
                self._take(msg.topic() or "", msg.key(), msg.value())
            if until_caught_up and not behind:
                return

    def _take(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        if topic == self.topics.runs:
            if key is None:
                return
            if value is None:
                self._runs.pop(key, None)
                return
            view = self._read_run(value)
            state = view.state
            # agent-runs says when the run started and ended and when its oldest pending
            # event happened, not its newest event: the newest of those stands in for it.
            seen = [int(state.started_at), int(state.finished_at or 0), view.oldest_pending_at or 0]
            self._runs[key] = RunSummary(
                run_id=str(state.run_id),
                status=state.status.value,
                started_at=int(state.started_at),
                finished_at=None if state.finished_at is None else int(state.finished_at),
                events_applied=state.events_applied,
                violations=sum(state.violation_counts.values()),
                stalled=state.stalled_since is not None and not state.is_terminal,
                pending=view.pending,
                pending_oldest_ts=view.oldest_pending_at,
                stream_time=max(seen),
            )
        elif topic == self.topics.violations and value is not None:
            violation = self._decode_violation(value)
            self._violations[violation.kind.value] += 1
            self._recent.append(
                ViolationRow(
                    run_id=str(violation.run_id),
                    kind=violation.kind.value,
                    first_seq=violation.first_seq,
                    last_seq=violation.last_seq,
                    message=violation.message,
                )
            )
        elif topic == self.topics.dlq:
            self._dlq += 1

    def _offsets(self) -> tuple[list[PartitionLag], int, int]:
        """Per-partition lag of the group, and the sums of end and committed offsets."""
        admin = self._admin
        assert admin is not None
        tps = [TopicPartition(self.topics.events, p) for p in self._event_partitions]
        latest, earliest = OffsetSpec.latest(), OffsetSpec.earliest()  # type: ignore[no-untyped-call]
        ends = admin.list_offsets(dict.fromkeys(tps, latest), request_timeout=10)
        lows = admin.list_offsets(dict.fromkeys(tps, earliest), request_timeout=10)
        end_by_p = {tp.partition: fut.result().offset for tp, fut in ends.items()}
        low_by_p = {tp.partition: fut.result().offset for tp, fut in lows.items()}
        committed: dict[int, int] = {}
        group_offsets = self._group_offsets
        assert group_offsets is not None
        try:
            for tp in group_offsets.committed(tps, timeout=10):
                if tp.offset >= 0 and tp.error is None:
                    committed[tp.partition] = tp.offset
        except KafkaException:
            pass  # coordinator not there yet: everything is lag until the next refresh
        lag = [
            PartitionLag(p, committed.get(p), low_by_p.get(p, 0), end_by_p.get(p, 0))
            for p in self._event_partitions
        ]
        folded = sum(p.committed if p.committed is not None else p.low for p in lag)
        return lag, sum(end_by_p.values()), folded

    # ------------------------------------------------------------------ snapshot

    def refresh(self, budget: float = 0.5, *, until_caught_up: bool = False) -> FleetSnapshot:
        """Read what is new (up to ``budget`` seconds) and sample the offsets."""
        self._read(budget, until_caught_up)
        lag, end_sum, folded_sum = self._offsets()
        now = time.monotonic()
        rate_in = rate_folded = None
        if self._previous is not None:
            then, end_before, folded_before = self._previous
            dt = now - then
            if dt > 0:
                rate_in = max(0, end_sum - end_before) / dt
                rate_folded = max(0, folded_sum - folded_before) / dt
        self._previous = (now, end_sum, folded_sum)
        return self.snapshot(lag, rate_in, rate_folded)

    def snapshot(
        self,
        lag: list[PartitionLag] | None = None,
        rate_in: float | None = None,
        rate_folded: float | None = None,
    ) -> FleetSnapshot:
        """The current picture from what was read so far (no network)."""
        runs = list(self._runs.values())
        by_status = dict.fromkeys(STATUSES, 0)
        for run in runs:
            by_status[run.status] = by_status.get(run.status, 0) + 1
        finished = [r for r in runs if r.finished_at is not None]
        slowest = sorted(finished, key=lambda r: (-(r.duration_ns or 0), r.run_id))
        failing = sorted(
            (r for r in runs if r.status == "FAILED"),
            key=lambda r: (-(r.finished_at or r.started_at), r.run_id),
        )
        waiting = [r.pending_oldest_ts for r in runs if r.pending_oldest_ts is not None]
        clock = max((r.stream_time for r in runs), default=0)
        return FleetSnapshot(
            bootstrap=self.settings.bootstrap_servers,
            group=self.group,
            topics=self.topics,
            runs_by_status=by_status,
            events_applied=sum(r.events_applied for r in runs),
            dlq=self._dlq,
            violations_by_kind=dict(sorted(self._violations.items())),
            lag=lag or [],
            events_in_per_s=rate_in,
            events_folded_per_s=rate_folded,
            recent_violations=list(reversed(self._recent)),
            slowest=slowest[: self._top],
            failing=failing[: self._top],
            stalled=sum(1 for r in runs if r.stalled),
            pending_events=sum(r.pending for r in runs),
            pending_oldest_age_ns=max(0, clock - min(waiting)) if waiting else None,
        )

    def run_ids(self) -> set[str]:
        """Ids of every run read from ``agent-runs`` so far."""
        return {r.run_id for r in self._runs.values()}

    def runs(self) -> list[RunSummary]:
        """Every run read from ``agent-runs`` so far."""
        return list(self._runs.values())


# ---------------------------------------------------------------------- rendering

_STATUS_STYLE = {
    "RUNNING": "cyan",
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELLED": "yellow",
}


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}/s"


def _duration(ns: int | None) -> str:
    if ns is None:
        return "—"
    seconds = ns / _NS
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _short(run_id: str) -> str:
    return run_id[:8]


def _runs_panel(snap: FleetSnapshot) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column()
    table.add_column(justify="right")
    for status in STATUSES:
        count = snap.runs_by_status.get(status, 0)
        table.add_row(Text(status, style=_STATUS_STYLE[status]), f"{count:,}")
        if status == "RUNNING" and snap.stalled:
            table.add_row(Text("  of them stalled", style="magenta"), f"{snap.stalled:,}")
    table.add_row(Text("total", style="bold"), Text(f"{snap.runs_total:,}", style="bold"))
    return Panel(table, title="runs by status", border_style="blue")


def _throughput_panel(snap: FleetSnapshot) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column()
    table.add_column(justify="right")
    table.add_row("events in", _rate(snap.events_in_per_s))
    table.add_row("events folded", _rate(snap.events_folded_per_s))
    table.add_row("events applied", f"{snap.events_applied:,}")
    table.add_row("violations", f"{sum(snap.violations_by_kind.values()):,}")
    table.add_row("dead letters", f"{snap.dlq:,}")
    table.add_row("pending (reorder)", f"{snap.pending_events:,}")
    table.add_row("oldest pending", _duration(snap.pending_oldest_age_ns))
    return Panel(table, title="throughput", border_style="blue")


def _lag_panel(snap: FleetSnapshot) -> Panel:
    table = Table(box=None, padding=(0, 1), show_edge=False)
    for column in ("partition", "committed", "end", "lag"):
        table.add_column(column, justify="right")
    for p in snap.lag:
        committed = "—" if p.committed is None else f"{p.committed:,}"
        style = "red" if p.lag > 1000 else ("yellow" if p.lag else "green")
        table.add_row(str(p.partition), committed, f"{p.end:,}", Text(f"{p.lag:,}", style=style))
    table.add_row("all", "", "", Text(f"{snap.total_lag:,}", style="bold"))
    return Panel(table, title=f"consumer lag (group {snap.group})", border_style="blue")


def _violations_panel(snap: FleetSnapshot) -> Panel:
    kinds = "  ".join(f"{kind} {count:,}" for kind, count in snap.violations_by_kind.items())
    table = Table(box=None, padding=(0, 1), show_edge=False)
    # Fixed widths for the short columns: the message takes (and is cut to) the rest.
    for column, width in (("run", 8), ("kind", 14), ("seq", 9), ("message", None)):
        table.add_column(column, no_wrap=True, overflow="ellipsis", min_width=width)
    for v in snap.recent_violations:
        seqs = str(v.first_seq) if v.first_seq == v.last_seq else f"{v.first_seq}..{v.last_seq}"
        table.add_row(_short(v.run_id), Text(v.kind, style="magenta"), seqs, v.message)
    body: RenderableType = Group(Text(kinds or "none yet", style="bold"), table)
    return Panel(body, title="recent violations", border_style="magenta")


def _runs_table(runs: Sequence[RunSummary], title: str, style: str) -> Panel:
    table = Table(box=None, padding=(0, 1), show_edge=False)
    for column in ("run", "status", "duration", "events", "violations"):
        table.add_column(column, justify="left" if column in ("run", "status") else "right")
    for r in runs:
        table.add_row(
            _short(r.run_id),
            Text(r.status, style=_STATUS_STYLE.get(r.status, "")),
            _duration(r.duration_ns),
            f"{r.events_applied:,}",
            str(r.violations),
        )
    if not runs:
        table.add_row("none yet", "", "", "", "")
    return Panel(table, title=title, border_style=style)


def render_snapshot(snap: FleetSnapshot, footer: RenderableType | None = None) -> RenderableType:
    """One frame of the live view (pure: the same snapshot gives the same picture)."""
    header = Text.assemble(
        ("runfold top", "bold"),
        f"  {snap.bootstrap}  ",
        (f"{snap.topics.events} → {snap.topics.runs}", "dim"),
        f"  {time.strftime('%H:%M:%S', time.localtime(snap.taken_at))}",
    )
    upper = Table.grid(expand=True, padding=(0, 1))
    for _ in range(3):
        upper.add_column(ratio=1)
    upper.add_row(_runs_panel(snap), _throughput_panel(snap), _lag_panel(snap))
    lower = Table.grid(expand=True, padding=(0, 1))
    lower.add_column(ratio=1)
    lower.add_column(ratio=1)
    lower.add_row(
        _runs_table(snap.slowest, "slowest runs", "cyan"),
        _runs_table(snap.failing, "failing runs (latest)", "red"),
    )
    parts: list[RenderableType] = [header, upper, _violations_panel(snap), lower]
    if footer is not None:
        parts.append(footer)
    return Group(*parts)
