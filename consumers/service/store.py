"""The runs of the partitions one folding service owns, restored from the state changelog.

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

Moving over from a deployment that kept whole states in ``agent-runs``: a changelog
partition that never had a record is restored from ``agent-runs`` once, when it holds
old RunState records and no summary (summaries cannot be resumed from, and next to one an
old state is stale: that partition is rebuilt from the events); those runs are *to copy*
(:meth:`PartitionStore.take_copies`) until the service's next commit writes them to the
changelog, so that the next restore finds them there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping

from consumers.run_view import holds_summary
from consumers.sequence import expire
from consumers.service.edge import FoldEdge
from consumers.service.restore import RestoredPartition, read_latest_by_key, rebuild_partition
from consumers.state import FoldConfig, Outcome, RunState
from consumers.state_bytes import PACKED_STATES, PINNED_RUN_STATE, pack_stored, unpack_stored
from schemas import RunStatus
from schemas.avro_binary import read_run_record
from schemas.framing import SINGLE_OBJECT_MAGIC

__all__ = ["PartitionStore"]

_STATE_BODY = len(SINGLE_OBJECT_MAGIC + PINNED_RUN_STATE)
"""Where a packed state's record starts once unpacked (its Run record comes first)."""

log = logging.getLogger("runfold.consume")


class PartitionStore:
    """Run states by input partition and run key (the run_id's text, as bytes)."""

    def __init__(self, edge: FoldEdge) -> None:
        self.edge = edge
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
        (~5 us, a third of a decode); None when it is not held as bytes (decoded since,
        or never restored). Raises on bytes it cannot read, like :meth:`get`."""
        packed = self._stored.get(partition, {}).get(key)
        if packed is None:
            return None
        if packed[:1] not in PACKED_STATES:
            return self.edge.decode_state(unpack_stored(key, packed)).status
        run, _ = read_run_record(unpack_stored(key, packed), _STATE_BODY)
        return RunStatus(run.status)

    def put(self, partition: int, key: bytes, state: RunState) -> None:
        """Keep ``state`` as the run's latest."""
        self.runs.setdefault(partition, {})[key] = state

    def observe(self, partition: int, keys: Iterable[bytes]) -> None:
        """Note the runs ``keys`` of ``partition`` changed: the partition's stream time moves
        to the newest of theirs, and a run holding buffered events is watched."""
        runs = self.runs.get(partition)
        if not runs:
            return
        clock = self.stream_time.get(partition, 0)
        waiting = self._waiting.setdefault(partition, set())
        for key in keys:
            state = runs.get(key)
            if state is None:
                continue
            if state.stream_time > clock:
                clock = state.stream_time
            if state.pending_events:
                waiting.add(key)
        self.stream_time[partition] = clock

    def expire(self, config: FoldConfig) -> Iterator[tuple[int, bytes, list[Outcome]]]:
        """Hold every watched reorder buffer to its time bound against its partition's
        stream time (:func:`consumers.sequence.expire`); yields ``(partition, key,
        outcomes)`` for each run whose gap it declared. A run restored with buffered
        events is watched from its first record on (until then it is only bytes)."""
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
        unwatched); a restored run's buffer counts from its first record on (before, it
        is only bytes)."""
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
            for key in [key for key, value in stored.items() if value[:1] not in PACKED_STATES]:
                self._thaw(p, key)
            total += len(stored) + len(self.runs[p])
            if not stored and not self.runs[p]:
                empty.append(p)
        return total, empty

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

    def _thaw(self, partition: int, key: bytes) -> RunState:
        """Decode a restored run's state into :attr:`runs`. A decode error propagates:
        the service stops, as it does when a state cannot be restored."""
        stored = self._stored[partition]
        state = self.edge.decode_state(unpack_stored(key, stored[key]))
        del stored[key]
        self.runs[partition][key] = state
        if str(getattr(state, "run_id", "")).encode() != key:
            self.unchecked.add(key)
        return state
