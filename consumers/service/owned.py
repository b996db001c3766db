"""The runs one folding service owns: the state of its store, and the reads of one run.

:class:`OwnedRuns` holds what every part of :class:`~consumers.service.store.PartitionStore`
shares, built in one ``__init__`` (as :class:`~consumers.service.base.ServiceBase` does for
the service), and the reads and writes of one run: a run's state is decoded
(:attr:`OwnedRuns.runs`) or, restored and not touched since, packed bytes decoded on its
run's first record (:meth:`OwnedRuns.get`). Each partition has a clock, the newest event
time of its changed runs (:meth:`OwnedRuns.observe`), against which the watched reorder
buffers are held (:meth:`OwnedRuns.expire`). The parts of the store are layered classes,
each in its module: ``OwnedRuns`` <- :class:`~consumers.service.lifecycle.StoreLifecycle`
(markers, paging out, forced flushes: every commit) <- ``PartitionStore`` (restore from
the changelog, moving over from ``agent-runs``, rebuild).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from heapq import heappush

from consumers.lifecycle import MarkerTable, finished_time
from consumers.sequence import expire
from consumers.service.config import Lifecycle
from consumers.service.edge import FoldEdge
from consumers.state import FoldConfig, Outcome, RunState
from consumers.state_bytes import packed_head, unpack_stored
from schemas import RunStatus

__all__ = ["LifecycleCounts", "OwnedRuns"]

_RUNNING = RunStatus.RUNNING


@dataclass
class LifecycleCounts:
    """What :meth:`PartitionStore.age` and :meth:`PartitionStore.bound` did (one commit)."""

    markers_made: int = 0
    markers_forgotten: int = 0
    markers_shed: int = 0
    runs_paged_out: int = 0
    forced_flushes: int = 0


class OwnedRuns:
    """Run states by input partition and run key (the run_id's text, as bytes)."""

    def __init__(
        self,
        edge: FoldEdge,
        lifecycle: Lifecycle | None = None,
        wall_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.edge = edge
        self._wall_clock = wall_clock
        self.lifecycle = lifecycle if lifecycle is not None else Lifecycle()
        self.markers: dict[int, MarkerTable] = {}
        """Per partition, the finished runs past their grace (16-byte run id -> marker)."""
        self._finishing: dict[int, list[tuple[int, bytes]]] = {}
        """Per partition, a heap of ``(finished_at, key)`` of runs seen finished, the
        earliest end first: the candidates for a marker (checked when their turn comes)."""
        self.counts = LifecycleCounts()
        """What the lifecycle did since the caller last took it (:meth:`take_counts`)."""
        self._stored_bytes = 0
        """Bytes of the packed states in :attr:`_stored` (a gauge, kept as they move)."""
        self.runs: dict[int, dict[bytes, RunState]] = {}
        """Decoded states: partition -> key -> state. The service's batch lane reads it."""
        self.unchecked: set[bytes] = set()
        """Keys of restored runs whose run_id is not the key: never for the batch lane,
        which trusts that a run's key is its run_id (the general path checks each event)."""
        self._stored: dict[int, dict[bytes, bytes]] = {}
        """Restored states not touched since: partition -> key -> packed state bytes."""
        self.stream_time: dict[int, int] = {}
        """Per partition, the newest event time of a run changed since it was assigned:
        the clock of the partition's reorder buffers (DESIGN.md §5)."""
        self._waiting: dict[int, set[bytes]] = {}
        """Per partition, the keys of decoded runs that hold buffered events."""
        self.horizon: dict[int, int] = {}
        """Per partition, the cutoff of the last forgetting (its clock less the retention
        at the last commit): an unknown run's event stamped before it is forgotten_run."""
        self._recent: dict[int, OrderedDict[bytes, int]] = {}
        """Per partition, the keys of decoded RUNNING runs and the wall time of the commit
        that last saw them changed, the least recently changed first: the order idle runs
        are paged out in."""
        self._unseeded: dict[int, list[bytes]] = {}
        """Per partition, the keys of restored states whose heads are not read yet
        (:meth:`~consumers.service.store.PartitionStore.seed`)."""
        self._copies: dict[int, set[bytes]] = {}
        """Per partition, the keys of runs restored from ``agent-runs`` (the migration)
        whose state is not in the changelog yet."""

    def partitions(self) -> list[int]:
        """The partitions whose runs are held, in order."""
        return sorted(self.runs)

    def clear(self) -> None:
        """Forget every run (revoke, loss, abort: the state is restored again)."""
        self.runs = {}
        self._stored = {}
        self.unchecked = set()
        self.stream_time = {}
        self._waiting = {}
        self.markers = {}
        self._finishing = {}
        self._stored_bytes = 0
        self._recent = {}
        self.horizon = {}
        self._unseeded = {}
        self._copies = {}

    def get(self, partition: int, key: bytes) -> RunState | None:
        """The run's state (decoded now if it was restored and not touched yet), or None."""
        state = self.runs.setdefault(partition, {}).get(key)
        if state is None and key in self._stored.get(partition, ()):
            state = self._thaw(partition, key)
        return state

    def untouched(self, partition: int) -> list[bytes]:
        """The keys of the partition's restored runs not decoded since (a snapshot)."""
        return list(self._stored.get(partition, ()))

    def stored_status(self, partition: int, key: bytes) -> RunStatus | None:
        """The status of a restored run not decoded yet, read from the head of its bytes
        (:func:`~consumers.state_bytes.packed_head`, a third of a decode); None when it is
        not held as bytes (decoded since, or never restored). Raises on bytes it cannot
        read, like :meth:`get`."""
        packed = self._stored.get(partition, {}).get(key)
        if packed is None:
            return None
        head = packed_head(key, packed)
        if head is None:  # another form, or a damaged head: the decode says which
            return self.edge.decode_state(unpack_stored(key, packed)).status
        return head.status

    def put(self, partition: int, key: bytes, state: RunState) -> None:
        """Keep ``state`` as the run's latest."""
        self.runs.setdefault(partition, {})[key] = state

    def clock_limit(self, now: int | None = None) -> int:
        """The latest time a partition's clock may show: the wall clock (``now`` when the
        caller read it) plus ``max_clock_skew`` (``ServiceConfig.max_clock_skew_s``). A run
        stamped later still folds, but moves no partition's clock: the lifecycle and the
        reorder buffers of every other run of its partition do not jump with one bad agent
        clock."""
        return (self._wall_clock() if now is None else now) + self.lifecycle.max_clock_skew_ns

    def observe(self, partition: int, keys: Iterable[bytes]) -> None:
        """Note the runs ``keys`` of ``partition`` changed: the partition's stream time moves
        to the newest of theirs, and a run holding buffered events is watched."""
        runs = self.runs.get(partition)
        if not runs:
            return
        clock = self.stream_time.get(partition, 0)
        now = self._wall_clock()
        limit = self.clock_limit(now)
        waiting = self._waiting.setdefault(partition, set())
        finishing = self._finishing.get(partition)
        recent = self._recent.get(partition)
        if recent is None:
            recent = self._recent[partition] = OrderedDict()
        for key in keys:
            state = runs.get(key)
            if state is None:
                continue
            if clock < state.stream_time <= limit:
                clock = state.stream_time
            if state.pending_events:
                waiting.add(key)
            if state.status is _RUNNING:
                recent[key] = now
                recent.move_to_end(key)
            else:
                recent.pop(key, None)
                if finishing is None:
                    finishing = self._finishing[partition] = []
                heappush(finishing, (finished_time(state), key))
        self.stream_time[partition] = clock

    def expire(self, config: FoldConfig) -> Iterator[tuple[int, bytes, list[Outcome]]]:
        """Hold every watched reorder buffer to its time bound against its partition's
        stream time (:func:`consumers.sequence.expire`); yields ``(partition, key,
        outcomes)`` for each run whose gap it declared. A run restored with buffered
        events is decoded and watched once its head is read
        (:meth:`~consumers.service.store.PartitionStore.seed`)."""
        for partition, waiting in self._waiting.items():
            clock = self.stream_time.get(partition, 0)
            runs = self.runs.get(partition, {})
            for key in list(waiting):
                state = runs.get(key)
                if state is not None and state.pending_events:
                    outcomes = expire(state, clock, config)
                    if outcomes:
                        yield partition, key, outcomes
                if state is None or not state.pending_events:
                    waiting.discard(key)

    def pending(self) -> dict[int, tuple[int, int]]:
        """Per held partition: the events in its watched reorder buffers (pending = buffered
        - released) and the age of the oldest of them in event time (ns): the partition's
        stream time minus that event's timestamp, the clock its bound is held to; 0 when
        none. Exact after a commit (every changed run observed, every empty buffer
        unwatched), a restored run's buffer included."""
        out: dict[int, tuple[int, int]] = {}
        for partition, runs in self.runs.items():
            count, oldest = 0, None
            for key in self._waiting.get(partition, ()):
                state = runs.get(key)
                if state is None or not state.pending_events:
                    continue
                count += len(state.pending_events)
                if oldest is None or state.pending_oldest_ts < oldest:
                    oldest = state.pending_oldest_ts
            clock = self.stream_time.get(partition, 0)
            out[partition] = (count, 0 if oldest is None else max(0, clock - oldest))
        return out

    def marker_count(self) -> int:
        """Markers held, over all partitions."""
        return sum(len(table) for table in self.markers.values())

    def gauges(self) -> dict[str, int]:
        """What the store holds now, the numbers its bounds are about (O(partitions +
        buffered runs): the commit takes them, a scrape reads the last ones)."""
        decoded = sum(len(runs) for runs in self.runs.values())
        return {
            "active_runs": decoded + sum(len(keys) for keys in self._stored.values()),
            "decoded_runs": decoded,
            "markers": self.marker_count(),
            "marker_bytes": sum(table.nbytes() for table in self.markers.values()),
            "stored_bytes": self._stored_bytes,
            "buffered_events": sum(
                len(state.pending_events)
                for partition, keys in self._waiting.items()
                for key in keys
                if (state := self.runs.get(partition, {}).get(key)) is not None
            ),
        }

    def _thaw(self, partition: int, key: bytes) -> RunState:
        """Decode a restored run's state into :attr:`runs`. A decode error propagates:
        the service stops, as it does when a state cannot be restored."""
        stored = self._stored[partition]
        state = self.edge.decode_state(unpack_stored(key, stored[key]))
        self._stored_bytes -= len(stored.pop(key))
        self.runs[partition][key] = state
        if str(getattr(state, "run_id", "")).encode() != key:
            self.unchecked.add(key)
        return state
