"""The owned runs' lifecycle and bounds, run at every commit (DESIGN.md §5).

The rules of :mod:`consumers.lifecycle`, applied by :meth:`StoreLifecycle.age` and
:meth:`StoreLifecycle.bound` to the runs an :class:`~consumers.service.owned.OwnedRuns`
holds (a layer of :class:`~consumers.service.store.PartitionStore`):

- a finished run whose grace is over (against its partition's stream time) is dropped
  from :attr:`~consumers.service.owned.OwnedRuns.runs` and kept as a marker in a packed
  :class:`~consumers.lifecycle.MarkerTable` per partition; its changelog record becomes a
  ``runfold.RunMarker`` (restore reads those into the table without decoding a state); a
  marker whose retention is over is forgotten and its key gets a tombstone. Over
  ``max_markers`` the oldest markers are shed first (counted, tombstoned like forgotten
  ones);
- a decoded RUNNING run unchanged for ``page_idle_ns`` (wall clock), and over
  ``max_active_runs`` decoded runs the least recently changed ones too (not changed in the
  open transaction, no buffered events), are paged out to packed bytes, as restored runs
  are kept until touched (~0.3 KiB instead of ~1.7 KiB for a short run): never dropped,
  thawed again by their next event;
- over ``max_buffered_events`` in all watched reorder buffers, the buffers with the
  oldest event are flushed: their gaps declared (``gap`` violations), counted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from heapq import heappop
from uuid import UUID

from consumers.lifecycle import Marker, MarkerTable, due_marker, finished_time, marker_of
from consumers.sequence import flush
from consumers.service.owned import LifecycleCounts, OwnedRuns
from consumers.state import Outcome
from consumers.state_bytes import pack_stored, packed_head, unpack_stored, write_marker
from schemas import RunStatus

__all__ = ["StoreLifecycle"]

_RUNNING = RunStatus.RUNNING

PAGE_IDLE_BATCH = 1_000
"""Runs paged out for being idle per :meth:`StoreLifecycle.page_out` call (~20 ms of
encoding): the loop calls it at every commit and every empty poll."""


Record = tuple[int, bytes, bytes | None]
"""``(partition, key, value)`` of a changelog record; value None: a tombstone."""


class StoreLifecycle(OwnedRuns):
    """The owned runs, with the lifecycle and the bounds a commit holds them to."""

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
        the changelog has their state already (the idle service calls it between commits).
        At most :data:`PAGE_IDLE_BATCH` idle ones a call (those over the bound all): a
        fleet whose runs all went quiet at once is paged over many turns of the loop, not
        in one pause of seconds."""
        life = self.lifecycle
        paged = idle = 0
        over = sum(len(runs) for runs in self.runs.values()) - life.max_active_runs
        idle_since = self._wall_clock() - life.page_idle_ns
        for partition, recent in list(self._recent.items()):
            runs, dirty = self.runs.get(partition, {}), busy.get(partition, set())
            before = paged
            # The least recently changed first; a run changed since it was seen here, or
            # one with a buffer, is seen again when it next changes.
            while recent:
                key, changed = next(iter(recent.items()))
                if key in dirty or (
                    over <= 0 and (changed > idle_since or idle >= PAGE_IDLE_BATCH)
                ):
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
                idle += over <= 0
                over -= 1
            if paged > before and not recent:
                # A dict keeps its table when emptied: sized for the runs a burst left.
                self._recent[partition] = OrderedDict()
        return paged

    def take_counts(self) -> LifecycleCounts:
        """What the lifecycle did since the last call (reset)."""
        counts, self.counts = self.counts, LifecycleCounts()
        return counts
