"""The runs of the partitions one folding service owns, restored from the state changelog.

:class:`PartitionStore` is the whole store: its state and the reads of a run are
:class:`~consumers.service.owned.OwnedRuns`'s; here is how it is filled, and the lifecycle
and the bounds a commit holds it to.

On assignment :meth:`PartitionStore.restore` reads each owned partition of the
changelog (latest state per run; ``agent-runs`` holds only the readers' summaries) and
keeps the states as packed bytes
(:func:`consumers.state_bytes.pack_stored`); a state is decoded on its run's first
record (:meth:`PartitionStore.get`), not at restore: most restored runs see no event
for a long time, and decoding them all made the restore of a million runs cost ~35 s
and ~4 KiB per run. A state that is not a current-version RunState stored under its own
run_id is decoded at restore, as before, so that a state of another shape fails the
assignment; a damaged one of the usual shape fails when its run is first touched.
On revoke, loss or abort the store is cleared; nothing in it outlives the ownership.

The run lifecycle (:mod:`consumers.lifecycle`, DESIGN.md §5) and the bounds live here
too, run at every commit by :meth:`PartitionStore.age` and :meth:`PartitionStore.bound`:

- a finished run whose grace is over (against its partition's stream time) is dropped
  from :attr:`runs` and kept as a marker in a packed :class:`MarkerTable` per partition;
  its changelog record becomes a ``runfold.RunMarker`` (restore reads those into the
  table without decoding a state); a marker whose retention is over is forgotten and its
  key gets a tombstone. Over ``max_markers`` the oldest markers are shed first (counted,
  tombstoned like forgotten ones);
- a decoded RUNNING run unchanged for ``page_idle_ns`` (wall clock), and over
  ``max_active_runs`` decoded runs the least recently changed ones too (not changed in the
  open transaction, no buffered events), are paged out to packed bytes, as restored runs
  are kept until touched (~0.3 KiB instead of ~1.5 KiB for a short run): never dropped,
  thawed again by their next event;
- over ``max_buffered_events`` in all watched reorder buffers, the buffers with the
  oldest event are flushed: their gaps declared (``gap`` violations), counted.

Moving over from a deployment that kept whole states in ``agent-runs``: a changelog
partition that never had a record is restored from ``agent-runs`` once, when it holds
old RunState records and no summary (summaries cannot be resumed from, and next to one an
old state is stale: that partition is rebuilt from the events); those runs are *to copy*
(:meth:`PartitionStore.take_copies`) until the service's next commit writes them to the
changelog, so that the next restore finds them there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from heapq import heapify, heappop
from uuid import UUID

from consumers.lifecycle import Marker, MarkerTable, due_marker, finished_time, marker_of
from consumers.run_view import holds_summary
from consumers.sequence import flush
from consumers.service.owned import LifecycleCounts, OwnedRuns
from consumers.service.restore import RestoredPartition, read_latest_by_key, rebuild_partition
from consumers.state import Outcome, RunState
from consumers.state_bytes import (
    MARKER_HEADER,
    PACKED_STATES,
    pack_stored,
    packed_head,
    read_marker,
    unpack_stored,
    write_marker,
)
from schemas import RunStatus

__all__ = ["PartitionStore"]

_RUNNING = RunStatus.RUNNING


Record = tuple[int, bytes, bytes | None]
"""``(partition, key, value)`` of a changelog record; value None: a tombstone."""

log = logging.getLogger("runfold.consume")


class PartitionStore(OwnedRuns):
    """Run states by input partition and run key, restored from the state changelog (or
    rebuilt from the events), held to the lifecycle and the bounds at every commit."""

    def restore(
        self,
        kafka: Mapping[str, object],
        changelog_topic: str,
        partitions: list[int],
        timeout: float,
        runs_topic: str | None = None,
    ) -> tuple[int, list[int]]:
        """Read the latest state of every run of ``partitions`` from ``changelog_topic``;
        a partition of it that never had a record is read from ``runs_topic`` instead
        (when given: an older deployment's whole states, see the module docstring).

        Returns how many runs were restored and the partitions that had none.
        """
        restored = read_latest_by_key(
            kafka, changelog_topic, partitions, timeout=timeout, pack=pack_stored
        )
        unwritten = [p for p in partitions if restored[p].records == 0]
        if runs_topic is not None and unwritten:
            old = read_latest_by_key(kafka, runs_topic, unwritten, timeout=timeout)
            for p in unwritten:
                self._take_over(changelog_topic, runs_topic, p, old[p].latest, restored[p])
        total = 0
        empty: list[int] = []
        for p in partitions:
            stored = restored[p].latest
            self.runs[p] = {}
            self._stored[p] = stored
            markers, latest_end = self._restore_markers(p, stored)
            self.markers[p] = markers
            self._stored_bytes += sum(map(len, stored.values()))
            self._seed(p, stored, latest_end)
            for key in [key for key, value in stored.items() if value[:1] not in PACKED_STATES]:
                self._thaw(p, key)
            total += len(stored) + len(self.runs[p]) + len(markers)
            if not stored and not self.runs[p] and not markers:
                empty.append(p)
        return total, empty

    def _seed(self, partition: int, stored: dict[bytes, bytes], clock: int) -> None:
        """From the heads of the restored states and the markers: queue the finished runs
        for their marker (oldest first), and start the partition's clock at the latest
        start or end among them. A lower bound of the clock before the restart (a run's
        later events are not read here): the lifecycle and the forgotten-run rule act
        later, never sooner, until the partition's next events move it."""
        finished: list[tuple[int, bytes]] = []
        limit = self.clock_limit()
        clock = min(clock, limit)
        for key, value in stored.items():
            head = packed_head(key, value)
            if head is None:
                continue
            if clock < head.started_at <= limit:
                clock = head.started_at
            if head.finished_at is not None:
                finished.append((head.finished_at, key))
                if clock < head.finished_at <= limit:
                    clock = head.finished_at
        heapify(finished)
        self._finishing[partition] = finished
        if clock:
            self.stream_time[partition] = clock

    def _restore_markers(
        self, partition: int, stored: dict[bytes, bytes]
    ) -> tuple[MarkerTable, int]:
        """Move the marker records out of ``stored`` into a table; returns it and the
        latest end among them. A marker that does not read, or not under its own run's
        key, fails the assignment, as a state that does not decode does."""
        read: list[tuple[int, bytes, Marker]] = []
        keys = [key for key, value in stored.items() if value.startswith(MARKER_HEADER)]
        for key in keys:
            run_id, marker = read_marker(stored.pop(key))
            if str(run_id).encode() != key:
                raise ValueError(
                    f"partition {partition}: a RunMarker of run {run_id} is stored under "
                    f"key {key.decode('utf-8', 'replace')!r}"
                )
            read.append((marker.finished_at, run_id.bytes, marker))
        read.sort()  # oldest first: the order they are forgotten and shed in
        table = MarkerTable()
        for _, run_key, marker in read:
            table.add(run_key, marker)
        return table, read[-1][0] if read else 0

    def marker(self, partition: int, run_id: UUID) -> Marker | None:
        """The marker of a finished run of ``partition`` past its grace, or None."""
        table = self.markers.get(partition)
        return table.get(run_id.bytes) if table else None

    def age(self, partition: int) -> list[Record]:
        """The lifecycle of ``partition`` at its stream time; returns the changelog records
        it makes: a RunMarker for each run shrunk to a marker, a tombstone for each
        marker forgotten or shed. Call :meth:`observe` first (the commit does)."""
        now = self.stream_time.get(partition)
        runs = self.runs.get(partition)
        if now is None or runs is None:
            return []
        life, counts = self.lifecycle, self.counts
        table = self.markers.get(partition)
        if table is None:
            table = self.markers[partition] = MarkerTable()
        records: list[Record] = []
        due: list[tuple[int, bytes, Marker]] = []
        finishing = self._finishing.get(partition)
        stored = self._stored.get(partition, {})
        chosen: set[bytes] = set()  # a run may be queued more than once (seen again)
        while finishing and now - finishing[0][0] > life.grace_ns:
            _, key = heappop(finishing)
            if key in chosen:
                continue
            state = runs.get(key)
            if state is not None:
                if not due_marker(state, now, life.grace_ns):
                    continue  # seen again with a later time (queued again)
                if str(state.run_id).encode() != key or state.pending_events:
                    continue  # a run stored under another key stays whole; so does a buffer
                due.append((finished_time(state), key, marker_of(state)))
                chosen.add(key)
            elif key in stored:
                # Restored finished and never touched: its marker from the packed bytes.
                head = packed_head(key, stored[key])
                if head is not None and head.finished_at is not None:
                    if head.last_digest is None:  # not in the head: decoded (a few of them)
                        marker = marker_of(self.edge.decode_state(unpack_stored(key, stored[key])))
                    else:
                        marker = Marker(
                            head.last_seq, head.status, head.finished_at, head.last_digest
                        )
                    due.append((head.finished_at, key, marker))
                    chosen.add(key)
        due.sort(key=lambda entry: entry[:2])  # oldest first, as they will be forgotten
        for _, key, marker in due:
            run_id = UUID(key.decode())
            try:
                value = write_marker(run_id, marker)
            except Exception:  # noqa: BLE001 - a seq an Avro long cannot hold: kept whole
                continue
            if runs.pop(key, None) is None:
                self._stored_bytes -= len(stored.pop(key))
            self._waiting.get(partition, set()).discard(key)
            table.add(run_id.bytes, marker)
            records.append((partition, key, value))
            counts.markers_made += 1
        cutoff = now - life.retention_ns
        if cutoff > self.horizon.get(partition, cutoff - 1):
            self.horizon[partition] = cutoff
        for run_key in table.forget_before(cutoff):
            records.append((partition, str(UUID(bytes=run_key)).encode(), None))
            counts.markers_forgotten += 1
        while self.marker_count() > life.max_markers and table:
            oldest = table.pop_oldest()
            if oldest is not None:
                records.append((partition, str(UUID(bytes=oldest[0])).encode(), None))
                counts.markers_shed += 1
        return records

    def bound(self, busy: Mapping[int, set[bytes]]) -> Iterator[tuple[int, bytes, list[Outcome]]]:
        """Hold the store to its bounds: flush the oldest buffers over
        ``max_buffered_events`` (yields ``(partition, key, outcomes)`` of each, for the
        caller to count, publish and write), then :meth:`page_out` (none of ``busy``: the
        runs the open transaction changed)."""
        life, config = self.lifecycle, self.edge.config
        waiting = [
            (state.pending_oldest_ts, partition, key, state)
            for partition, keys in self._waiting.items()
            for key in keys
            if (state := self.runs.get(partition, {}).get(key)) is not None
        ]
        total = sum(len(state.pending_events) for *_, state in waiting)
        if total > life.max_buffered_events:
            for _, partition, key, state in sorted(waiting, key=lambda w: w[:3]):
                if total <= life.max_buffered_events:
                    break
                total -= len(state.pending_events)
                outcomes = flush(state, config)
                self._waiting[partition].discard(key)
                self.counts.forced_flushes += 1
                yield partition, key, outcomes
        self.page_out(busy)

    def page_out(self, busy: Mapping[int, set[bytes]]) -> int:
        """Page out to packed bytes the decoded RUNNING runs unchanged for
        ``page_idle_ns``, and over ``max_active_runs`` the least recently changed ones too
        (none of ``busy``, none with buffered events); returns how many. Writes nothing:
        the changelog has their state already (the idle service calls it between commits)."""
        life = self.lifecycle
        paged = 0
        over = sum(len(runs) for runs in self.runs.values()) - life.max_active_runs
        idle_since = self._wall_clock() - life.page_idle_ns
        for partition, recent in self._recent.items():
            runs, dirty = self.runs.get(partition, {}), busy.get(partition, set())
            # The least recently changed first; a run changed since it was seen here, or
            # one with a buffer, is seen again when it next changes.
            while recent:
                key, changed = next(iter(recent.items()))
                if (over <= 0 and changed > idle_since) or key in dirty:
                    break  # so are all after it (changed later)
                del recent[key]
                state = runs.get(key)
                if state is None or state.status is not _RUNNING or state.pending_events:
                    continue
                del runs[key]
                packed = pack_stored(key, self.edge.encode_state(state))
                self._stored.setdefault(partition, {})[key] = packed
                self._stored_bytes += len(packed)
                self.counts.runs_paged_out += 1
                paged += 1
                over -= 1
        return paged

    def take_counts(self) -> LifecycleCounts:
        """What the lifecycle did since the last call (reset)."""
        counts, self.counts = self.counts, LifecycleCounts()
        return counts

    def _take_over(
        self,
        changelog_topic: str,
        runs_topic: str,
        partition: int,
        old: dict[bytes, bytes],
        into: RestoredPartition,
    ) -> None:
        """Restore ``partition`` from the whole states in ``runs_topic`` (moving over, see
        the module docstring). Not when it holds a summary too: the deployment moved over
        before and its changelog was lost since; the whole states there are older than the
        summaries, so the partition is left empty, to be rebuilt from the events."""
        if not old:
            return
        if any(holds_summary(value) for value in old.values()):
            log.warning(
                "%s[%d] has no record but %s[%d] holds summaries: not restored from it",
                changelog_topic, partition, runs_topic, partition,
            )  # fmt: skip
            return
        log.info(
            "%s[%d] has no record yet: restoring its %d runs from the whole states in %s[%d] "
            "(once; the next commit copies them to %s)",
            changelog_topic, partition, len(old), runs_topic, partition, changelog_topic,
        )  # fmt: skip
        into.latest = {key: pack_stored(key, value) for key, value in old.items()}
        self._copies[partition] = set(old)

    def take_copies(self) -> Iterator[tuple[int, bytes, RunState | bytes]]:
        """The runs restored from ``agent-runs`` and not in the changelog yet, each as
        ``(partition, key, state)`` (decoded since) or ``(partition, key, value)`` (the
        record's bytes as read); forgotten here, for the caller to write them."""
        copies, self._copies = self._copies, {}
        for partition, keys in copies.items():
            runs, stored = self.runs.get(partition, {}), self._stored.get(partition, {})
            for key in keys:
                state = runs.get(key)
                if state is not None:
                    yield partition, key, state
                elif key in stored:
                    yield partition, key, unpack_stored(key, stored[key])

    def rebuild(
        self, kafka: Mapping[str, object], events_topic: str, partition: int, stop: int
    ) -> dict[bytes, RunState]:
        """Fold the partition's events before ``stop`` again (outputs are not re-emitted)
        and hold the runs; returns them, for the caller to write."""
        runs = rebuild_partition(kafka, events_topic, partition, stop, self.edge)
        self.runs[partition] = runs
        return runs
