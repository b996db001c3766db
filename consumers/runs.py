"""The fold: events in, ``Run`` state and named anomalies out (DESIGN.md §5).

Pure code: no Kafka, no clock, no logging. :func:`apply_event` folds one event
into one run's :class:`~consumers.state.RunState` (its rules live in
:mod:`consumers.sequence`); :class:`FoldResult` routes the events of many runs and
enforces the global bounds; :func:`fold` is a loop.

Sequence rules for an event with ``seq = s`` when the run's last applied seq is ``l``
(DESIGN.md §5; where the design is silent, the choice is named here):

- ``s == l + 1``: ``APPLIED``, then buffered successors in order (``released``).
- ``s <= l``, same content: ``DUPLICATE``, dropped and counted in the run's
  ``duplicates``. It is *not* a violation (DESIGN.md §5: "counted, not published"): the
  outcome carries none, and the run's ``recent_violations`` and ``violation_counts``
  never hold a ``duplicate``. (A redelivery is normal at-least-once traffic; each one
  published would bury the anomalies that matter.) The kind ``duplicate`` stays in the
  Violation schema for a caller that asks to publish them:
  :func:`~consumers.sequence.duplicate_violation` builds one from the outcome (the
  service's ``publish_duplicates``). The accounting identity is unchanged: ``DUPLICATE``
  is still one of the outcomes.
- ``s <= l``, other content: ``VIOLATION`` ``conflict``, not applied.
- ``s <= l`` inside a range declared missing: ``VIOLATION`` ``gap`` ("late event for
  seq s declared missing"), never applied, however often it comes.
- ``s <= l`` older than the digest window: ``DUPLICATE``, counted in
  ``unverified_duplicates``. The content can no longer be compared; a redelivery is
  far likelier than a conflict, and neither is applied, so only the name is at stake.
- ``s == 0``: ``VIOLATION`` ``conflict`` (seqs start at 1).
- ``s > l + 1``: ``BUFFERED`` in the run's reorder buffer; if an event is already
  buffered at ``s``, a duplicate or conflict of that one.
- Buffer over a bound (more than ``max_pending_per_run`` events, or the stream time
  more than ``max_delay_ns`` past its oldest buffered one): a ``gap``
  violation for ``l+1 ..= next_buffered-1``, carried by the released event that moves
  the run on; the range is remembered as missing.
- Run terminal and ``s > l``: ``VIOLATION`` ``after_terminal``; the status never
  changes. Events still buffered when the run ends get it too (``released``).
- Run finished longer ago than the grace: known by its marker only, judged by the marker
  rule (:mod:`consumers.lifecycle`: ``after_terminal``, duplicate, or ``conflict`` at
  its last seq); run forgotten after the retention: ``VIOLATION`` ``forgotten_run``.
- First applied event not ``graph_started``: ``APPLIED`` with a ``missing_start``
  violation; ``started_at`` is that event's timestamp and the identity fields stay
  empty (``""``, inputs ``null``) until a ``graph_started`` is applied.

The stream time is the newest timestamp of an event applied or buffered: the run's own
holds its buffer as its events come; the fold's (:attr:`FoldResult.stream_time`, held by
:meth:`FoldResult.expire`; the service's per partition, at every commit) holds every
buffer, so a lost event followed by nothing in its run is still declared once the stream
has moved on. A rejected event (conflict, after the end) moves no clock.

Content is the event's timestamp, kind (tag and fields) and payload, digested by
:func:`~consumers.digest.content_digest` (stable across processes, since the digests
are persisted).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from uuid import UUID

from consumers.digest import content_digest
from consumers.lifecycle import (
    MarkerTable,
    due_marker,
    forgotten,
    forgotten_outcome,
    judge,
    marker_of,
)
from consumers.sequence import expire, flush, fold_event
from consumers.state import DEFAULT_CONFIG, FoldConfig, Outcome, RunState
from consumers.tally import Tally
from schemas import Event, RunStatus

__all__ = ["FoldResult", "FoldStats", "fold"]

_RUNNING = RunStatus.RUNNING


# --- many runs -------------------------------------------------------------------------


@dataclass
class FoldStats:
    """What the lifecycle and the global bounds of a :class:`FoldResult` did to its runs."""

    finished_runs_evicted: int = 0
    """Finished runs made markers early to make room (``max_runs``)."""
    running_runs_evicted: int = 0
    """RUNNING runs forgotten (no finished one left to evict); buffers flushed first.
    A later event of such a run starts a new state and gets ``missing_start``."""
    markers_made: int = 0
    """Finished runs shrunk to a marker after their grace (:meth:`FoldResult.age`)."""
    markers_forgotten: int = 0
    """Markers dropped after their retention (:meth:`FoldResult.age`)."""
    markers_shed: int = 0
    """Markers dropped early, oldest first, to stay within ``max_markers``: a later event
    of such a run looks new (``missing_start``) or forgotten, by its time."""
    marker_events: int = 0
    """Events of runs known by their marker (duplicates, conflicts or after_terminal)."""
    forgotten_run_events: int = 0
    """Events of forgotten runs (``forgotten_run`` violations)."""
    forced_flushes: int = 0
    """Runs whose buffer was flushed because all buffers held ``max_pending_total``."""


@dataclass
class FoldResult:
    """The fold of many runs' events: ``runs`` by run_id, within the global bounds.

    Use :meth:`apply` per event (the service does) or :func:`fold` for a whole stream.
    Finished runs stay whole in :attr:`runs` until :meth:`age` (or ``max_runs``) shrinks
    them to :attr:`markers` (:mod:`consumers.lifecycle`); :func:`fold` does not age, so
    the runs of a stream folded at once are all there to read.
    """

    config: FoldConfig = DEFAULT_CONFIG
    runs: dict[UUID, RunState] = field(default_factory=dict)
    markers: MarkerTable = field(default_factory=MarkerTable)
    """Finished runs no longer held whole, by their id's 16 bytes, oldest first."""
    stats: FoldStats = field(default_factory=FoldStats)
    tally: Tally = field(default_factory=Tally)
    pending_total: int = 0
    """Events held in all reorder buffers."""
    stream_time: int = 0
    """The newest event time the fold has placed (applied or buffered): the clock
    :meth:`expire` holds every reorder buffer to (DESIGN.md §5)."""
    forgotten_before: int | None = None
    """The cutoff of the last :meth:`age` (stream time less the retention): an unknown
    run's event stamped before it is ``forgotten_run``. None until the fold has aged."""
    _order: OrderedDict[UUID, None] = field(default_factory=OrderedDict, repr=False)
    _finished: OrderedDict[UUID, None] = field(default_factory=OrderedDict, repr=False)
    _with_pending: OrderedDict[UUID, None] = field(default_factory=OrderedDict, repr=False)

    def add(self, state: RunState) -> list[Outcome]:
        """Track a run restored from elsewhere (replacing any state of that run)."""
        outcomes: list[Outcome] = []
        run_id = state.run_id
        if run_id in self.runs:
            self._forget(run_id)
        elif len(self.runs) >= self.config.max_runs:
            outcomes = self._make_room()
        self.markers.remove(run_id.bytes)
        self.runs[run_id] = state
        self._order[run_id] = None
        self._track(run_id, state, 0)
        return outcomes

    def apply(self, event: Event, digest: int | None = None) -> list[Outcome]:
        """Fold one event; the outcomes may include released events of other runs
        flushed or evicted to keep within the global bounds."""
        run_id = event.run_id
        state = self.runs.get(run_id)
        room: list[Outcome] = []
        if state is None:
            known = self._known_otherwise(event, digest)
            if known is not None:
                self.tally.add(known)
                return known
            if len(self.runs) >= self.config.max_runs:
                room = self._make_room()
            state = RunState.new(run_id, event.timestamp, self.config)
            self.runs[run_id] = state
            self._order[run_id] = None
        before = len(state.pending_events)
        outcomes = fold_event(state, event, self.config, digest)
        if state.stream_time > self.stream_time:
            self.stream_time = state.stream_time
        if before or state.pending_events or state.status is not _RUNNING:
            self._track(run_id, state, before)
            if self.pending_total > self.config.max_pending_total:
                outcomes.extend(self.relieve())
        if room:
            outcomes.extend(room)
        self.tally.add(outcomes)
        return outcomes

    def _known_otherwise(self, event: Event, digest: int | None) -> list[Outcome] | None:
        """The outcome of an event of a run not held whole: known by its marker, or
        forgotten (:mod:`consumers.lifecycle`); None for a new run."""
        marker = self.markers.get(event.run_id.bytes) if self.markers else None
        if marker is not None:
            self.stats.marker_events += 1
            if digest is None:
                digest = content_digest(event)
            return [judge(marker, event.run_id, event.seq, digest)]
        retention = self.config.marker_retention_ns
        if forgotten(event.timestamp, self.forgotten_before):
            self.stats.forgotten_run_events += 1
            return [forgotten_outcome(event.run_id, event.seq, event.timestamp, retention)]
        return None

    def age(self, stream_time: int | None = None) -> list[UUID]:
        """The run lifecycle at ``stream_time`` (default: the fold's): finished runs past
        ``marker_grace_ns`` shrink to markers, markers past ``marker_retention_ns`` are
        forgotten; returns the ids forgotten (what a changelog would tombstone)."""
        if stream_time is not None and stream_time > self.stream_time:
            self.stream_time = stream_time
        now, config = self.stream_time, self.config
        for run_id in list(self._finished):
            state = self.runs[run_id]
            if due_marker(state, now, config.marker_grace_ns):
                self._to_marker(run_id)
                self.stats.markers_made += 1
        cutoff = now - config.marker_retention_ns
        gone = self.markers.forget_before(cutoff)
        if self.forgotten_before is None or cutoff > self.forgotten_before:
            self.forgotten_before = cutoff
        self.stats.markers_forgotten += len(gone)
        return [UUID(bytes=key) for key in gone]

    def expire(self, stream_time: int | None = None) -> list[Outcome]:
        """Declare the gaps of every buffer older than ``max_delay_ns`` behind the fold's
        :attr:`stream_time` (or ``stream_time``, when later: time that passed with no event).

        Each run's own events hold its buffer to its own clock as they come; this holds
        every buffer to the clock of all the runs, so a run whose lost event is followed by
        nothing of its own is still declared. The folding service does it per partition at
        every commit; :meth:`apply` does not, so that what :func:`fold` makes of a stream
        does not depend on how runs interleave. The outcomes are ``released`` ones, counted
        in :attr:`tally`.
        """
        if stream_time is not None and stream_time > self.stream_time:
            self.stream_time = stream_time
        outcomes: list[Outcome] = []
        for run_id in list(self._with_pending):
            state = self.runs[run_id]
            before = len(state.pending_events)
            released = expire(state, self.stream_time, self.config)
            if released:
                outcomes.extend(released)
                self._track(run_id, state, before)
        self.tally.add(outcomes, consumed=0)
        return outcomes

    def _track(self, run_id: UUID, state: RunState, before: int) -> None:
        """Book-keeping after ``state`` changed: buffers, finished runs, the bounds."""
        after = len(state.pending_events)
        self.pending_total += after - before
        if after:
            if run_id not in self._with_pending:
                self._with_pending[run_id] = None
        else:
            self._with_pending.pop(run_id, None)
        if state.status is not _RUNNING and run_id not in self._finished:
            self._finished[run_id] = None

    def relieve(self) -> list[Outcome]:
        """Flush the oldest buffers until all of them together are within the bound."""
        outcomes: list[Outcome] = []
        while self.pending_total > self.config.max_pending_total and self._with_pending:
            run_id = next(iter(self._with_pending))
            state = self.runs[run_id]
            before = len(state.pending_events)
            outcomes.extend(flush(state, self.config))
            self.stats.forced_flushes += 1
            self._track(run_id, state, before)
        return outcomes

    def _make_room(self) -> list[Outcome]:
        """Evict one run: the longest finished (to a marker), else the oldest running
        (flushed first)."""
        if self._finished:
            self._to_marker(next(iter(self._finished)))
            self.stats.finished_runs_evicted += 1
            return []
        run_id, _ = self._order.popitem(last=False)
        state = self.runs[run_id]
        before = len(state.pending_events)
        outcomes = flush(state, self.config)
        self._track(run_id, state, before)
        self._forget(run_id)
        self.stats.running_runs_evicted += 1
        return outcomes

    def _to_marker(self, run_id: UUID) -> None:
        """Replace a finished run by its marker; shed the oldest markers over the bound."""
        state = self.runs[run_id]
        self._forget(run_id)
        markers = self.markers
        markers.add(run_id.bytes, marker_of(state))
        while len(markers) > self.config.max_markers:
            markers.pop_oldest()
            self.stats.markers_shed += 1

    def _forget(self, run_id: UUID) -> None:
        state = self.runs.pop(run_id)
        self.pending_total -= len(state.pending_events)
        self._order.pop(run_id, None)
        self._finished.pop(run_id, None)
        self._with_pending.pop(run_id, None)


def fold(events: Iterable[Event], config: FoldConfig = DEFAULT_CONFIG) -> FoldResult:
    """Fold a stream of events of any runs: a loop over :meth:`FoldResult.apply`."""
    result = FoldResult(config)
    apply = result.apply
    for event in events:
        apply(event)
    return result
