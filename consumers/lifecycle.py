"""Run lifecycle: a finished run becomes a small marker, then is forgotten (DESIGN.md §5).

Pure code: no Kafka, no clock, no logging; every time is an event time passed in (the
stream time of the fold or of a service partition). One implementation, used by the
library fold (:class:`~consumers.runs.FoldResult`) and the folding service
(:class:`~consumers.service.lifecycle.StoreLifecycle`).

A finished run (status not RUNNING) stays whole for ``grace`` after it finished
(:func:`due_marker`), so that late duplicates and conflicts are judged on its full
digest window. Then it shrinks to a :class:`Marker`: its last seq, its status, when it
finished and the content digest of its last applied event (the terminal one, unless a
gap came before it). An event of a run known only by its marker is judged by
:func:`judge`, the marker rule:

- ``seq > last_seq``: ``VIOLATION`` ``after_terminal`` (not applied);
- ``seq == last_seq`` and the marker holds a digest: ``DUPLICATE`` when the content is
  the same, ``VIOLATION`` ``conflict`` when it differs;
- otherwise (``seq < last_seq``, or no digest kept): ``DUPLICATE``, counted as
  unverified: the content of older seqs is not kept (a marker costs ~50 bytes, a digest
  window 512), and a redelivery is far likelier than a conflict; neither is applied.
  A seq inside a range the run had declared missing is a duplicate here too (the whole
  state named it ``gap``): the ranges are not kept.

Duplicates carry no violation (DESIGN.md: dropped, counted).

After ``retention`` (event time since it finished) a marker is forgotten. An event of a
forgotten run cannot be told by its id (remembering every id ever seen is the unbounded
memory the lifecycle exists to avoid), so the rule is on its time (:func:`forgotten`):
an event of a run the fold does not know, stamped before the cutoff of the last
forgetting (the stream time less ``retention`` when markers were last forgotten), is
``VIOLATION`` ``forgotten_run``, not a new run: had its run finished, it would have
been forgotten by then. A forgotten
run's event stamped within the retention (a retry hours later of an event after the
end) is a new run, and its first event gets ``missing_start`` unless it is a
``graph_started``: named, never silent. A backfill of runs older than the retention
is refused by the same rule: raise the retention for one.

:class:`MarkerTable` holds the markers of one fold (or one partition) packed: 41 bytes
per marker in one ``bytearray``, oldest first, plus a 4-byte open-addressing index,
about 50-60 bytes per marker in all (``benchmarks/marker_memory.py`` measures it),
where a dict of tuples costs ~250.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator
from typing import NamedTuple
from uuid import UUID

from consumers.state import DEFAULT_CONFIG, Outcome, OutcomeKind, RunState
from schemas import RunStatus, Violation, ViolationKind

__all__ = [
    "DEFAULT_GRACE_NS",
    "DEFAULT_RETENTION_NS",
    "Marker",
    "MarkerTable",
    "due_marker",
    "finished_time",
    "forgotten",
    "forgotten_outcome",
    "judge",
    "marker_of",
    "verified",
]

DEFAULT_GRACE_NS = DEFAULT_CONFIG.marker_grace_ns
"""How long (event time) a finished run stays whole: 5 minutes."""
DEFAULT_RETENTION_NS = DEFAULT_CONFIG.marker_retention_ns
"""How long (event time since it finished) a finished run's marker is kept: 7 days."""

_RUNNING = RunStatus.RUNNING
_new_outcome = tuple.__new__


class Marker(NamedTuple):
    """What is kept of a finished run after its grace period."""

    last_seq: int
    status: RunStatus
    finished_at: int
    """Event time (ns) the run finished (its terminal event's timestamp)."""
    digest: int
    """Content digest of the event at ``last_seq`` (0: not known, e.g. declared missing)."""


def finished_time(state: RunState) -> int:
    """When a finished run finished: its terminal event's time, else its stream time
    (a run ended by other means than its own terminal event)."""
    finished = state.finished_at
    return int(finished) if finished is not None else state.stream_time


def due_marker(state: RunState, stream_time: int, grace_ns: int) -> bool:
    """Whether ``state`` should shrink to a marker: finished more than ``grace_ns`` ago."""
    return state.status is not _RUNNING and stream_time - finished_time(state) > grace_ns


def marker_of(state: RunState) -> Marker:
    """The marker of a finished run."""
    digests = state.digests
    last = state.last_seq
    return Marker(last, state.status, finished_time(state), digests[last % len(digests)])


def forgotten(timestamp: int, horizon: int | None) -> bool:
    """Whether an event of a run not known (neither whole nor marker) belongs to a run
    forgotten after its retention: it is stamped before ``horizon``, the cutoff of the
    last forgetting (stream time less the retention then; None: nothing forgotten yet,
    so nothing is judged forgotten: a stream folded without aging keeps every run)."""
    return horizon is not None and timestamp < horizon


def judge(marker: Marker, run_id: UUID, seq: int, digest: int) -> Outcome:
    """The outcome of an event at ``seq`` of a run known by its marker (the marker rule)."""
    last = marker.last_seq
    if seq > last:
        text = f"run {run_id} is {marker.status.value} since seq {last}; event at seq {seq} ignored"
        violation = _violation(run_id, ViolationKind.AFTER_TERMINAL, seq, text)
        return _new_outcome(Outcome, (OutcomeKind.VIOLATION, run_id, seq, (violation,), False))
    if seq == last and marker.digest and digest != marker.digest:
        text = (
            f"run {run_id}: event at seq {seq} differs from the one applied at that seq "
            "(the run is finished); not applied"
        )
        violation = _violation(run_id, ViolationKind.CONFLICT, seq, text)
        return _new_outcome(Outcome, (OutcomeKind.VIOLATION, run_id, seq, (violation,), False))
    return _new_outcome(Outcome, (OutcomeKind.DUPLICATE, run_id, seq, (), False))


def verified(marker: Marker, seq: int) -> bool:
    """Whether :func:`judge` compared the content of an event at ``seq`` (a duplicate it
    did not compare is an unverified one)."""
    return seq == marker.last_seq and marker.digest != 0


def forgotten_outcome(run_id: UUID, seq: int, timestamp: int, retention_ns: int) -> Outcome:
    """The outcome of an event of a forgotten run (:func:`forgotten`): not applied."""
    days = retention_ns / 86_400e9
    text = (
        f"run {run_id}: event at seq {seq} stamped {timestamp} is older than the retention "
        f"of finished runs ({days:g} days) and its run is not known: a run forgotten after "
        "it finished; not applied"
    )
    violation = _violation(run_id, ViolationKind.FORGOTTEN_RUN, seq, text)
    return _new_outcome(Outcome, (OutcomeKind.VIOLATION, run_id, seq, (violation,), False))


def _violation(run_id: UUID, kind: ViolationKind, seq: int, message: str) -> Violation:
    return Violation(run_id=run_id, kind=kind, first_seq=seq, last_seq=seq, message=message)


# --- the packed table --------------------------------------------------------------------

_RECORD = struct.Struct("<16sQqQB")  # id, last_seq (u64), finished_at, digest, status
_SIZE = _RECORD.size  # 41
_STATUS_AT = _SIZE - 1
_GONE = 255
_STATUSES = tuple(RunStatus)
_STATUS_CODE = {status: code for code, status in enumerate(_STATUSES)}
_MIN_CAPACITY = 64


class MarkerTable:
    """Markers keyed by 16-byte run id, oldest first, packed (see the module docstring).

    Records are appended to one ``bytearray`` in the order markers are added; the
    oldest are dropped from its front (:meth:`pop_oldest`, :meth:`forget_before`), any
    one can be removed (:meth:`remove`: its status byte says gone). ``_index`` is an
    open-addressing table of record numbers + 1 (0: empty) at most two thirds full; it
    is rebuilt when it grows and when the dropped front is compacted away.
    """

    __slots__ = ("_data", "_gone", "_head", "_index", "_live", "_mask")

    def __init__(self) -> None:
        self._data = bytearray()
        self._head = 0
        """Records before this one are dropped (not compacted away yet)."""
        self._live = 0
        self._gone = 0
        """Records at or after the head removed by :meth:`remove`."""
        self._index = array("I", bytes(4 * _MIN_CAPACITY))
        self._mask = _MIN_CAPACITY - 1

    def __len__(self) -> int:
        return self._live

    def nbytes(self) -> int:
        """Bytes held by the table's buffers (what :data:`len` markers cost)."""
        return len(self._data) + self._index.itemsize * len(self._index)

    def _find(self, key: bytes) -> int:
        """Record number of the live marker of ``key``, or -1."""
        data, index, mask, head = self._data, self._index, self._mask, self._head
        slot = hash(key) & mask
        while True:
            entry = index[slot]
            if entry == 0:
                return -1
            record = entry - 1
            if record >= head:
                at = record * _SIZE
                if data[at : at + 16] == key and data[at + _STATUS_AT] != _GONE:
                    return record
            slot = (slot + 1) & mask

    def get(self, key: bytes) -> Marker | None:
        """The marker of the run whose 16-byte id is ``key``, or None."""
        record = self._find(key)
        if record < 0:
            return None
        return self._marker(record * _SIZE)

    def __contains__(self, key: bytes) -> bool:
        return self._find(key) >= 0

    def _marker(self, at: int) -> Marker:
        _, last_seq, finished_at, digest, status = _RECORD.unpack_from(self._data, at)
        return Marker(last_seq, _STATUSES[status], finished_at, digest)

    def add(self, key: bytes, marker: Marker) -> None:
        """Add (or replace) the marker of ``key``; it is the newest."""
        if len(key) != 16:
            raise ValueError(f"a marker key is a 16-byte run id, not {len(key)} bytes")
        self.remove(key)
        record = len(self._data) // _SIZE
        if 3 * (record + 1) > 2 * len(self._index):  # dropped records still hold their slot
            self._rebuild()
            record = len(self._data) // _SIZE
        self._data += _RECORD.pack(
            key, marker.last_seq, marker.finished_at, marker.digest, _STATUS_CODE[marker.status]
        )
        self._place(record)
        self._live += 1

    def remove(self, key: bytes) -> bool:
        """Drop the marker of ``key`` (a run known whole again); whether there was one."""
        record = self._find(key)
        if record < 0:
            return False
        self._data[record * _SIZE + _STATUS_AT] = _GONE
        self._live -= 1
        self._gone += 1
        return True

    def oldest(self) -> tuple[bytes, Marker] | None:
        """The oldest live marker, or None."""
        self._skip_gone()
        if self._live == 0:
            return None
        at = self._head * _SIZE
        return bytes(self._data[at : at + 16]), self._marker(at)

    def pop_oldest(self) -> tuple[bytes, Marker] | None:
        """Drop and return the oldest live marker, or None."""
        oldest = self.oldest()
        if oldest is not None:
            self._head += 1
            self._live -= 1
            self._compact()
        return oldest

    def forget_before(self, cutoff: int) -> list[bytes]:
        """Drop the markers, oldest first, while they finished before ``cutoff``; return
        their keys. A marker is never dropped before its time; one behind a newer marker
        added earlier waits for it (they are added in about the order they finished)."""
        keys: list[bytes] = []
        while True:
            oldest = self.oldest()
            if oldest is None or oldest[1].finished_at >= cutoff:
                return keys
            self._head += 1
            self._live -= 1
            keys.append(oldest[0])
            self._compact()

    def __iter__(self) -> Iterator[tuple[bytes, Marker]]:
        """Live markers, oldest first."""
        data = self._data
        for record in range(self._head, len(data) // _SIZE):
            at = record * _SIZE
            if data[at + _STATUS_AT] != _GONE:
                yield bytes(data[at : at + 16]), self._marker(at)

    def _skip_gone(self) -> None:
        data = self._data
        end = len(data) // _SIZE
        while self._head < end and data[self._head * _SIZE + _STATUS_AT] == _GONE:
            self._head += 1
            self._gone -= 1

    def _compact(self) -> None:
        """Cut the dropped front away once it is a quarter of the buffer: the buffer holds
        at most a third more records than are live (amortised O(1): a rebuild for every
        quarter of the records dropped)."""
        if self._head > 1024 and 4 * self._head > len(self._data) // _SIZE:
            self._rebuild()

    def _rebuild(self) -> None:
        """Keep only live records, exactly (no spare capacity: the next add grows it by an
        eighth), and an index of at least two slots per record: it takes a third as many
        adds again before the next rebuild (amortised O(1)), and costs 8-16 bytes per
        marker. A lookup of a run with no marker (every new run's) probes 1.5-5 slots."""
        old, start = self._data, self._head * _SIZE
        if self._gone:
            # Copied one record at a time into place: a list of slices to join would be
            # a small object per marker, whose memory the process keeps after.
            data = bytearray(self._live * _SIZE)
            end = 0
            for at in range(start, len(old), _SIZE):
                if old[at + _STATUS_AT] != _GONE:
                    data[end : end + _SIZE] = old[at : at + _SIZE]
                    end += _SIZE
        else:
            data = old[start:]
        capacity = _MIN_CAPACITY
        while capacity < 2 * (self._live + 1):
            capacity *= 2
        self._data = data
        self._head = 0
        self._gone = 0
        self._index = array("I", bytes(4 * capacity))
        self._mask = capacity - 1
        for record in range(len(data) // _SIZE):
            self._place(record)

    def _place(self, record: int) -> None:
        at = record * _SIZE
        index, mask = self._index, self._mask
        slot = hash(bytes(self._data[at : at + 16])) & mask
        while index[slot]:
            slot = (slot + 1) & mask
        index[slot] = record + 1
