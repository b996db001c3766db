"""The runs of the partitions one folding service owns, restored from the state changelog.

:class:`PartitionStore` is the whole store, and this module is how it is filled: its
state and the reads of a run are :class:`~consumers.service.owned.OwnedRuns`'s, the
lifecycle and the bounds a commit holds it to
:class:`~consumers.service.lifecycle.StoreLifecycle`'s.

On assignment :meth:`PartitionStore.restore` reads each owned partition of the
changelog (latest state per run; ``agent-runs`` holds only the readers' summaries) and
keeps the states as packed bytes
(:func:`consumers.state_bytes.pack_stored`); a state is decoded on its run's first
record (:meth:`PartitionStore.get`), not at restore: most restored runs see no event
for a long time, and decoding them all made the restore of a million runs cost ~35 s
and ~4 KiB per run. A state that is not a current-version RunState stored under its own
run_id is decoded at restore, as before, so that a state of another shape fails the
assignment; a damaged one of the usual shape fails when its run is first touched. The
heads of the restored states (finished or not, when, whether a reorder buffer holds events)
are read after the restore, a batch at each commit and idle turn
(:meth:`PartitionStore.seed`); a RUNNING run whose buffer holds events is decoded then, and
its buffer held to the partition's clock from then on, not from its run's next record.
On revoke, loss or abort the store is cleared; nothing in it outlives the ownership.

Moving over from a deployment that kept whole states in ``agent-runs``: a changelog
partition that never had a record is restored from ``agent-runs`` once, when it holds
old RunState records and no summary (summaries cannot be resumed from, and next to one an
old state is stale: that partition is rebuilt from the events); those runs are *to copy*
(:meth:`PartitionStore.take_copies`) until the service's next commit writes them to the
changelog, so that the next restore finds them there. A partition whose changelog is
empty although its offsets are committed (its state was lost) is rebuilt from the events
instead (:meth:`PartitionStore.rebuild`).
"""

from __future__ import annotations

import logging
from binascii import unhexlify
from collections.abc import Iterator, Mapping
from contextlib import suppress
from heapq import heappush

from consumers.lifecycle import MarkerTable
from consumers.run_view import holds_summary
from consumers.service.lifecycle import StoreLifecycle
from consumers.service.restore import RestoredPartition, read_latest_by_key, rebuild_partition
from consumers.state import RunState
from consumers.state_bytes import (
    MARKER_HEADER,
    PACKED_STATES,
    pack_stored,
    packed_head,
    read_marker,
    unpack_stored,
)

__all__ = ["SEED_BATCH", "MarkerReader", "PartitionStore"]

log = logging.getLogger("runfold.consume")

SEED_BATCH = 20_000
"""Restored heads read per :meth:`PartitionStore.seed` call (~0.1 s)."""


class MarkerReader:
    """The markers of one partition's changelog, put in their table as they are read.

    In the changelog's order, the order the service made them (about the order their runs
    finished, as :class:`~consumers.lifecycle.MarkerTable` expects). A later state or
    tombstone of the same run drops its marker: the last record of a key is the one that
    counts, as the broker's compaction keeps. A marker that does not read, or not under
    its own run's key, fails the assignment, as a state that does not decode does.
    """

    __slots__ = ("latest_end", "partition", "table")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.table = MarkerTable()
        self.latest_end = 0
        """The latest end among the markers read: a lower bound of the partition's clock."""

    def take(self, key: bytes, value: bytes | None) -> bool:
        """Take ``value`` when it is a marker (True); a tombstone drops the run's marker
        (a forgotten run). A state is left to the caller (False): the markers of runs
        whose last record is a state are dropped at the end (:meth:`drop_superseded`),
        once per run rather than once per record."""
        if value is not None and value.startswith(MARKER_HEADER):
            run_id, marker = read_marker(value)
            if str(run_id).encode() != key:
                raise ValueError(
                    f"partition {self.partition}: a RunMarker of run {run_id} is stored "
                    f"under key {key.decode('utf-8', 'replace')!r}"
                )
            self.table.add(run_id.bytes, marker)
            self.latest_end = max(self.latest_end, marker.finished_at)
            return True
        if value is None:
            self._drop(key)
        return False

    def drop_superseded(self, stored: Mapping[bytes, bytes]) -> None:
        """Drop the markers of the runs whose last record is a state in ``stored`` (a run
        known whole again after its marker was written)."""
        if self.table:
            for key in stored:
                self._drop(key)

    def _drop(self, key: bytes) -> None:
        if self.table:
            with suppress(ValueError):  # not a run id's text: no marker of it
                self.table.remove(unhexlify(key.replace(b"-", b"")))


class PartitionStore(StoreLifecycle):
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
        readers = {p: MarkerReader(p) for p in partitions}
        restored = read_latest_by_key(
            kafka,
            changelog_topic,
            partitions,
            timeout=timeout,
            pack=pack_stored,
            take=lambda p, key, value: readers[p].take(key, value),
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
            self.hold_restored(p, stored, readers[p])
            total += len(stored) + len(self.runs[p]) + len(self.markers[p])
            if not stored and not self.runs[p] and not self.markers[p]:
                empty.append(p)
        return total, empty

    def hold_restored(
        self, partition: int, stored: dict[bytes, bytes], markers: MarkerReader
    ) -> None:
        """Hold the latest changelog records of ``partition``: the states (key -> packed
        value, as :func:`~consumers.service.restore.read_latest_by_key` gives them) as bytes,
        their heads read later (:meth:`seed`), a state of another form decoded now; the
        markers ``markers`` took while they were read in their table. The partition's
        clock starts at the latest end among the markers."""
        markers.drop_superseded(stored)
        self.runs[partition] = {}
        self._stored[partition] = stored
        self.markers[partition] = markers.table
        self._stored_bytes += sum(map(len, stored.values()))
        self._finishing[partition] = []
        clock = min(markers.latest_end, self.clock_limit())
        if clock:
            self.stream_time[partition] = clock
        self._unseeded[partition] = list(stored)
        for key in [key for key, value in stored.items() if value[:1] not in PACKED_STATES]:
            self._thaw(partition, key)
        self._waiting[partition] = {
            key for key, state in self.runs[partition].items() if state.pending_events
        }

    def seed(self, limit: int = SEED_BATCH) -> int:
        """Read the heads of up to ``limit`` restored states not read yet; returns how many.

        From each head (:func:`~consumers.state_bytes.packed_head`, a few µs): a finished
        run is queued for its marker, the partition's clock moves up to the latest start or
        end (a lower bound of the clock before the restart: a run's later events are not
        read here, so the lifecycle and the forgotten-run rule act later, never sooner,
        until the partition's next events move it), and a RUNNING run whose reorder buffer
        holds events is decoded and watched, its gap declared once the clock passes its
        bound whether or not its run sends again. Not at restore: a million heads take
        seconds, and the service folds meanwhile; the commits and the idle loop call it.
        """
        done = 0
        for partition, keys in self._unseeded.items():
            stored = self._stored.get(partition, {})
            finishing = self._finishing.setdefault(partition, [])
            ceiling = self.clock_limit()
            clock = self.stream_time.get(partition, 0)
            buffering: list[bytes] = []
            while keys and done < limit:
                key = keys.pop()
                done += 1
                value = stored.get(key)
                head = None if value is None else packed_head(key, value)
                if head is None:  # decoded since, a marker since, or left to the decode
                    continue
                if clock < head.started_at <= ceiling:
                    clock = head.started_at
                if head.buffering:
                    buffering.append(key)
                if head.finished_at is not None:
                    heappush(finishing, (head.finished_at, key))
                    if clock < head.finished_at <= ceiling:
                        clock = head.finished_at
            if clock:
                self.stream_time[partition] = clock
            for key in buffering:
                self._thaw(partition, key)
                self._waiting.setdefault(partition, set()).add(key)
            if done >= limit:
                break
        self._unseeded = {p: keys for p, keys in self._unseeded.items() if keys}
        return done

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
